"""Text from a server, a song file or a plugin is data: on the terminal and in the log its
control characters are shown, never interpreted, and rich markup in it is text."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeConfig

from bygheartd.cli.follow import event_line
from bygheartd.jobs import Event, JobStatus, utcnow
from bygheartd.logs import setup_logging
from bygheartd.store.events import JobEvent
from bygheartd.store.store import Store

CLEAR = "\x1b[2J"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"
LINK = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"
BIDI = "\u202egnp.exe"
C1 = "\x9b31m"
TITLE = f"Night [/bold] [link=http://evil.example]x[/link] {CLEAR}"
REASON = f"the server said {CLIPBOARD}{LINK}{BIDI}{C1}"


def _hostile_job(config_path: Path, state: Path) -> str:
    store = Store(state / "jobs.sqlite3")
    try:
        job = store.insert_job(title=TITLE, model=None, request={}, api_body={}, credits=0)
        store.transition(job.id, JobStatus.FAILED, event="failed", reason=REASON)
        return job.id
    finally:
        store.close()


def _run(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    "command", [["list"], ["list", "--wide"], ["show", "JOB"], ["show", "JOB", "--wide"]]
)
def test_list_and_show_print_hostile_titles_and_reasons_as_text(
    make_config: MakeConfig, command: list[str]
) -> None:
    config = make_config()
    assert config.source_path is not None
    job_id = _hostile_job(config.source_path, config.state_dir)
    done = _run(config.source_path, *[job_id if c == "JOB" else c for c in command])
    assert done.returncode == 0, done.stderr  # one title never stops the listing
    out = done.stdout
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out
    assert "[/bold]" in out and "[link=http://evil.example]" in out  # text, not markup
    if command[0] == "show":
        assert "\\x1b]52;c;" in out and "\\u202e" in out and "\\x9b" in out


def test_follow_lines_show_control_characters() -> None:
    item = JobEvent(
        1, "0123456789abcd", TITLE, Event(utcnow(), "failed", "running", "failed", REASON)
    )
    line = event_line(item)
    assert "\x1b" not in line and "\u202e" not in line and "\\x1b]52;c;" in line


def test_the_daemon_log_shows_control_characters() -> None:
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    logging.getLogger("bygheartd.test").warning("job %s failed: %s", "abc", REASON)
    text = stream.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text
    assert "\\x1b]8;;http://evil.example" in text


def test_a_models_draft_notes_and_title_are_shown_as_text(
    make_config: MakeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a language model wrote (`inspire`, `describe`) reaches the terminal as text."""
    from bygheartd.cli.drafts import write_song_draft
    from bygheartd.service.drafts import SongDraft

    draft = SongDraft(
        title="Clear\x1b[2Jscreen",
        lyrics="[Verse]\nla",
        meta={"style": "pop"},
        notes=["the model says \x1b]52;c;cHduZWQ=\x07 hi"],
    )
    rc = write_song_draft(make_config(None), draft, None, force=False, then="queue it")
    out = capsys.readouterr()
    assert rc == 0
    assert "\x1b" not in out.out + out.err and "\x07" not in out.out + out.err
    assert "note: the model says" in out.err and "Clear" in out.out


def test_a_drafts_lyrics_from_the_model_are_written_as_text(make_config: MakeConfig) -> None:
    """`cat drafts/song.md` must not run what the model put in its lyrics."""
    from bygheartd.cli.drafts import write_song_draft
    from bygheartd.service.drafts import SongDraft

    config = make_config(None)
    lyrics = f"[Verse]\nla {CLIPBOARD} la{CLEAR}\n{BIDI}"
    draft = SongDraft(title="Quiet", lyrics=lyrics, meta={"style": "pop"}, notes=[])
    assert write_song_draft(config, draft, None, force=False, then="queue it") == 0
    (written,) = config.folders.drafts.glob("*.md")
    text = written.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]52;c;" in text and "[Verse]\nla " in text


def test_a_note_in_failed_shows_what_the_server_said_as_text(tmp_path: Path) -> None:
    """Every note beside a file in failed/ goes through one writer, which escapes."""
    from bygheartd.folders.moves import write_note

    moved = tmp_path / "song.txt"
    moved.write_text("la", encoding="utf-8")
    note = write_note(moved, f"song.txt failed later:\nthe server said {REASON}\n")
    raw = note.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and "\u202e".encode() not in raw
    assert b"\\x1b]52;c;" in raw and b"failed later:\nthe server said" in raw


@pytest.fixture
def hostile_health(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hosted-API stand-in whose /health and model ids carry escape sequences."""
    from _scripted import ok
    from _servers import PREFIX, TRANSCRIPT, scripted_server

    with scripted_server(tmp_path_factory.mktemp("audio")) as (api, thread):
        api.expect("POST", "/query_result", ok(TRANSCRIPT["query_empty"]))
        health = {"status": f"ok{CLEAR}", "service": f"fake{CLIPBOARD}", "version": C1}
        api.expect("GET", "/health", ok({"data": health, "code": 200}))
        models = [{"id": f"evil{CLIPBOARD}"}, {"id": "x" * 5000}]
        api.expect("GET", "/v1/models", ok({"object": "list", "data": models}))
        yield thread.origin + PREFIX


def test_config_check_online_shows_what_the_server_says_as_text(
    make_config: MakeConfig, hostile_health: str
) -> None:
    config = make_config(None, api={"base_url": hostile_health})
    assert config.source_path is not None
    done = _run(config.source_path, "config", "check", "--online")
    out = done.stdout + done.stderr
    assert "health:" in out and "models:" in out, out
    for raw in ("\x1b", "\x07", "\x9b"):
        assert raw not in out
    assert "\\x1b[2J" in out and "\\x1b]52;c;" in out
    assert "x" * 5000 not in out and "x" * 79 + "…" in out
