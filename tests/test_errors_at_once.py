"""Issue 12: every problem of a song file at once (with line, key and fix), YAML syntax
errors on the right line, `submit A B C` queuing the good files past a bad one, a warning for
a song with no style at all, and messages that never point at files pip does not install."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, MakeConfig

from bygheartd.errors import RequestError, SongFileError
from bygheartd.jobs import Origin
from bygheartd.runtime import open_service
from bygheartd.service.service import SongService
from bygheartd.service.submission import Submission
from bygheartd.songs.request import SongRequest
from bygheartd.songs.songfile import parse_song_text
from bygheartd.watch.intake import Intake

PACKAGE = Path(__file__).resolve().parent.parent / "bygheartd"

THREE_BAD = (
    "---\ntitle: Too Much\nduration: 700\nbpm: 500\nkey: H minor\nstyle: synthwave\n---\nla la la\n"
)
GOOD = "---\ntitle: {title}\nstyle: warm indie folk\nmodel: bygheart-melody-fast\n---\nla la\n"


def file_error(text: str, name: str = "inbox/song.txt") -> SongFileError:
    with pytest.raises(SongFileError) as info:
        parse_song_text(text, name=name)
    return info.value


# --- 1. every problem at once --------------------------------------------------------


def test_three_bad_values_are_reported_together_each_with_line_key_and_fix() -> None:
    err = file_error(THREE_BAD)
    assert [(p.line, p.key) for p in err.problems] == [(3, "duration"), (4, "bpm"), (5, "key")]
    assert all(p.hint for p in err.problems)
    assert str(err).split("\n") == [
        "inbox/song.txt: 3 problems:",
        "  line 3, key 'duration': duration 700 is above the maximum of 600 seconds:"
        ' use 10 to 600 seconds, "m:ss" such as 3:30, or "auto"',
        "  line 4, key 'bpm': bpm 500 is above the maximum of 200 on the hosted service:"
        " use 30 to 200, or leave bpm out",
        "  line 5, key 'key': key 'H minor' is not a key: write a note, an optional # or b,"
        " and major or minor: C major, F# minor, Bb, Am",
    ]
    # One line for job reasons and logs, naming every problem.
    assert err.reason.startswith("3 problems: duration 700 is above")
    assert "bpm 500" in err.reason and "'H minor'" in err.reason


def test_an_unknown_key_is_reported_with_the_bad_values() -> None:
    err = file_error("---\ntempo: 120\nbpm: 500\n---\nla\n")
    assert [(p.line, p.key) for p in err.problems] == [(2, "tempo"), (3, "bpm")]
    assert err.problems[0].hint == "did you mean 'bpm'?"


def test_a_single_problem_keeps_its_one_line_wording() -> None:
    err = file_error("---\nbpm: 500\n---\nla\n")
    assert not err.problems
    assert str(err) == (
        "inbox/song.txt: line 2: bpm 500 is above the maximum of 200 on the hosted service:"
        " use 30 to 200, or leave bpm out"
    )


def test_rules_between_fields_are_reported_together() -> None:
    with pytest.raises(RequestError) as info:
        SongRequest.build(
            {"lyrics": "la la", "instrumental": True, "seed": [1, 2, 3], "takes": 2},
            source="mcp",
        )
    reasons = [p.reason for p in info.value.problems]
    assert reasons == [
        "instrumental: true, but there are lyrics",
        "seed lists 3 seeds, but takes is 2",
    ]


def test_a_bad_value_is_not_replaced_by_the_default_silently() -> None:
    from bygheartd.songs.request import RequestRules

    rules = RequestRules(defaults={"bpm": 100, "style": "folk"})
    with pytest.raises(RequestError) as info:
        SongRequest.build({"lyrics": "la", "bpm": 500, "key": "H minor"}, rules)
    assert [p.key for p in info.value.problems] == ["bpm", "key"]


# --- 2. YAML syntax errors on the right line ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "---\ntitle: x\nstyle: [unclosed\nbpm: 100\n---\nla\n",
        "---\ntitle: x\nstyle: {unclosed\nbpm: 100\n---\nla\n",
        '---\ntitle: x\nstyle: "unclosed\nbpm: 100\n---\nla\n',
    ],
    ids=["list", "table", "quote"],
)
def test_an_unclosed_bracket_or_quote_is_reported_on_its_own_line(text: str) -> None:
    err = file_error(text)
    assert err.line == 3
    assert err.reason.startswith("the front matter is not valid YAML")


# --- 3. the drop folder's note ---------------------------------------------------------


@pytest.fixture
async def intake(make_config: MakeConfig) -> AsyncIterator[tuple[Intake, SongService]]:
    config = make_config()
    service = open_service(config)
    yield Intake(config, service), service
    await service.close()


@pytest.mark.anyio
async def test_the_error_note_lists_every_problem_with_where_and_how(
    intake: tuple[Intake, SongService],
) -> None:
    drop, _ = intake
    inbox, failed = drop.config.folders.inbox, drop.config.folders.failed
    (inbox / "bad.txt").write_text(THREE_BAD, encoding="utf-8")
    assert (await drop.process(inbox / "bad.txt")).kind == "rejected"
    note = (failed / "bad.txt.error.txt").read_text(encoding="utf-8")
    assert "What is wrong: 3 problems\n" in note
    assert (
        "2. bpm 500 is above the maximum of 200 on the hosted service\n"
        "   Where: line 4, key 'bpm'\n"
        "   How to fix: use 30 to 200, or leave bpm out\n"
    ) in note
    assert "1. duration 700" in note and "3. key 'H minor' is not a key" in note
    assert "   Where: line 5, key 'key'\n" in note


@pytest.mark.anyio
async def test_a_drop_without_any_style_is_accepted_with_a_warning_on_its_job(
    intake: tuple[Intake, SongService],
) -> None:
    drop, service = intake
    inbox = drop.config.folders.inbox
    (inbox / "plain.txt").write_text("just lyrics\n", encoding="utf-8")
    (inbox / "styled.txt").write_text(GOOD.format(title="Styled"), encoding="utf-8")
    assert (await drop.process(inbox / "plain.txt")).kind == "accepted"
    assert (await drop.process(inbox / "styled.txt")).kind == "accepted"
    warnings = {job.title: job.warnings for job in await service.list()}
    assert warnings["Styled"] == ()
    [warning] = warnings["plain"]
    assert warning.startswith("no style:") and "[defaults] style" in warning


@pytest.mark.anyio
async def test_a_style_from_the_defaults_means_no_warning(make_config: MakeConfig) -> None:
    config = make_config(defaults={"style": "lo-fi piano"})
    service = open_service(config)
    try:
        request = service.build_request({"lyrics": "la la"})
        job = (await service.submit(Submission(request, Origin.CLI))).job
        assert job.warnings == ()
    finally:
        await service.close()


# --- 3 and 4. `bygheartd submit` ------------------------------------------------------


def bgh(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_LOAD_PLUGINS": "",
        "COLUMNS": "80",
    }
    cmd = [sys.executable, "-m", "bygheartd", *args, "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def cfg(make_config: MakeConfig) -> Path:
    path = make_config().source_path  # no daemon: submit only queues
    assert path is not None
    return path


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    paths[0].write_text(GOOD.format(title="Alpha"), encoding="utf-8")
    paths[1].write_text(THREE_BAD, encoding="utf-8")
    paths[2].write_text(GOOD.format(title="Charlie"), encoding="utf-8")
    return paths


def queued_titles(cfg: Path) -> list[str]:
    listed: list[dict[str, Any]] = json.loads(bgh("list", "--json", config=cfg).stdout)
    return sorted(r["title"] for r in listed)


def test_submit_queues_the_good_files_past_a_bad_one(cfg: Path, files: list[Path]) -> None:
    result = bgh("submit", *map(str, files), config=cfg)
    assert result.returncode == 1
    assert queued_titles(cfg) == ["Alpha", "Charlie"]
    assert "queued" in result.stdout and "Charlie" in result.stdout
    assert f"error: {files[1]}: 3 problems:" in result.stderr
    assert "  line 4, key 'bpm': bpm 500" in result.stderr
    assert "1 of 3 files refused: fix it and submit it again" in result.stderr


def test_submit_json_lists_the_jobs_on_stdout_and_the_refusal_on_stderr(
    cfg: Path, files: list[Path]
) -> None:
    """stdout is an array of job records only (`jq '.[].id'` works); each refused file is
    one JSON object a line on stderr, where errors go."""
    result = bgh("submit", "--json", *map(str, files), config=cfg)
    assert result.returncode == 1
    jobs = json.loads(result.stdout)
    assert all("id" in j and "error" not in j for j in jobs)
    assert [j["title"] for j in jobs] == ["Alpha", "Charlie"]
    assert all(j["status"] == "queued" for j in jobs)
    [refused] = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert refused["file"] == str(files[1])
    assert refused["error"].startswith(f"{files[1]}: 3 problems:")
    assert [(p["line"], p["key"]) for p in refused["problems"]] == [
        (3, "duration"),
        (4, "bpm"),
        (5, "key"),
    ]


def test_submit_with_only_good_files_still_exits_0(cfg: Path, files: list[Path]) -> None:
    result = bgh("submit", str(files[0]), str(files[2]), config=cfg)
    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stderr


def test_dry_run_checks_every_file(cfg: Path, files: list[Path]) -> None:
    result = bgh("submit", "--dry-run", *map(str, files), config=cfg)
    assert result.returncode == 1
    assert f"ok {files[0]}" in result.stdout and f"ok {files[2]}" in result.stdout
    assert f"error: {files[1]}: 3 problems:" in result.stderr
    assert queued_titles(cfg) == []


def test_submit_warns_about_a_song_without_any_style(cfg: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("just lyrics, no front matter\n", encoding="utf-8")
    result = bgh("submit", str(plain), config=cfg)
    assert result.returncode == 0, result.stderr  # a warning, never a refusal
    assert f"warning: {plain}: no style:" in result.stderr
    [record] = json.loads(bgh("list", "--json", config=cfg).stdout)
    assert record["warnings"] and record["warnings"][0].startswith("no style:")


# --- 5. no pointers at files that pip does not install -------------------------------

_UNINSTALLED = re.compile(r"docs/[\w-]+\.md|(?:in|from) config\.example\.toml")


def _message_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants that are not docstrings (those may cite the repository)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_no_message_points_at_a_file_that_is_not_installed() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in _message_strings(path)
        if _UNINSTALLED.search(text)
    ]
    assert found == []


def test_the_valid_keys_hint_points_at_the_guide_command() -> None:
    err = file_error("---\nzzqx: 1\n---\nla\n")
    assert err.hint is not None and "`bygheartd guide`" in err.hint
    assert "docs/" not in str(err)


@pytest.mark.anyio
async def test_mcp_reply_carries_the_no_style_warning(make_config: MakeConfig) -> None:
    from mcp import Client
    from mcp.types import TextContent

    from bygheartd.mcp.server import build_server
    from bygheartd.runtime import EngineRole, Runtime

    async with (
        Runtime(make_config(None), role=EngineRole.MCP, engine=False) as runtime,
        Client(build_server(runtime.service)) as client,
    ):
        bare = await client.call_tool("generate_song", {"lyrics": "la la la", "title": "Bare"})
        styled = await client.call_tool(
            "generate_song", {"lyrics": "la la la", "title": "Dressed", "style": "folk"}
        )
    assert bare.structured_content is not None and styled.structured_content is not None
    [warning] = bare.structured_content["warnings"]
    assert warning.startswith("no style:")
    text = "\n".join(c.text for c in bare.content if isinstance(c, TextContent))
    assert "Warning: no style:" in text
    assert styled.structured_content["warnings"] == []


def test_submit_dry_run_json_keeps_refusals_out_of_the_cost_rows(
    cfg: Path, files: list[Path]
) -> None:
    result = bgh("submit", "--dry-run", "--json", *map(str, files), config=cfg)
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert [r["title"] for r in rows] == ["Alpha", "Charlie"]
    assert all("error" not in r for r in rows)
    [refused] = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert refused["file"] == str(files[1]) and refused["problems"]
