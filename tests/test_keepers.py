"""Every finished job names its keeper: the quality gate's best take, or a person's choice
(`bygheartd keep`, MCP `keep_take`), and `[folders] keepers` holds one copy of it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig
from mcp import Client

from bygheartd.engine.keepers import gate_keeper
from bygheartd.jobs import Job, JobFile, JobStatus
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

SONG = "---\nstyle: synth pop\nduration: 10\ntakes: 3\n---\n[Verse]\nla la la\n"


def _takes(*names: str) -> list[JobFile]:
    return [JobFile(Path("/out") / n, 1, "0" * 64) for n in names]


def test_the_gate_keeps_a_passing_take_then_the_fewest_findings_then_the_closest_length() -> None:
    takes = _takes("a.mp3", "a.take2.mp3", "a.take3.mp3")
    finding = {"code": "clipped", "message": "clipped"}
    quality = {
        "a.mp3": {"verdict": "fail", "findings": [finding], "duration": 30.0},
        "a.take2.mp3": {"verdict": "pass", "findings": [], "duration": 24.0},
        "a.take3.mp3": {"verdict": "pass", "findings": [], "duration": 29.0},
    }
    assert gate_keeper(takes, quality, 30.0) == "a.take3.mp3"  # passes, closest to 30 s
    quality["a.take3.mp3"] = {"verdict": "fail", "findings": [finding, finding]}
    assert gate_keeper(takes, quality, 30.0) == "a.take2.mp3"  # the only one that passes
    quality["a.take2.mp3"] = {"verdict": "fail", "findings": [finding, finding]}
    assert gate_keeper(takes, quality, 30.0) == "a.mp3"  # none passes: fewest findings
    assert gate_keeper(takes, None, None) == "a.mp3"  # nothing judged: the first
    assert gate_keeper([], None, None) is None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _made(runtime: Runtime, tmp_path: Path) -> Job:
    song = tmp_path / "night drive.txt"
    song.write_text(SONG)
    job = await runtime.service.submit_file(song)
    done = await runtime.service.wait(job.id, timeout=30)
    assert done.status is JobStatus.DONE, done.reason
    return done


def _sidecar(job: Job) -> dict[str, Any]:
    folder = Path(job.output or "")
    data: dict[str, Any] = json.loads((folder / f"{job.base_name}.json").read_text())
    return data


async def test_a_finished_job_names_its_keeper_and_a_person_can_choose_another(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    keepers = tmp_path / "library"
    config = make_config(simulator, folders={"keepers": str(keepers)})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await _made(runtime, tmp_path)
        first, second, third = done.takes()
        assert done.keeper_record() == {
            "take": 1,
            "path": str(first.path),
            "uri": first.path.as_uri(),
            "by": "gate",
        }
        sidecar = _sidecar(done)
        assert (sidecar["keeper"], sidecar["keeper_by"]) == ("night-drive.mp3", "gate")
        copy = keepers / "night-drive.mp3"
        assert copy.read_bytes() == first.path.read_bytes()  # the library holds the keeper

        kept = await runtime.service.keep(done.id, 2)
        assert kept.as_record()["keeper"]["take"] == 2
        assert (_sidecar(kept)["keeper"], _sidecar(kept)["keeper_by"]) == (
            second.path.name,
            "person",
        )
        assert copy.read_bytes() == second.path.read_bytes()  # ours, unchanged: replaced
        assert sorted(p.name for p in keepers.iterdir()) == ["night-drive.mp3"]

        copy.write_bytes(b"my own edit")  # someone changed our copy: it is theirs now
        await runtime.service.keep(done.id, 3)
        assert copy.read_bytes() == b"my own edit"
        placed = keepers / "night-drive-2.mp3"
        assert _sha(placed) == _sha(third.path)  # the new keeper beside it, never over it
        history = [e.event for e in await runtime.service.history(done)]
        assert history.count("keeper") == 2


async def test_keep_refuses_an_unfinished_job_and_a_take_it_does_not_have(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    from bygheartd.service.errors import ServiceError

    async with Runtime(make_config(simulator), role=EngineRole.MCP) as runtime:
        done = await _made(runtime, tmp_path)
        with pytest.raises(ServiceError, match="has 3 takes: choose 1 to 3"):
            await runtime.service.keep(done.id, 4)
        async with Client(build_server(runtime.service)) as client:
            result = await client.call_tool("keep_take", {"job_id": done.id, "take": 2})
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["keeper"]["take"] == 2
            assert result.structured_content["keeper"]["by"] == "person"
            wrong = await client.call_tool("keep_take", {"job_id": done.id, "take": 9})
            assert wrong.is_error


async def test_the_keep_command_changes_the_keeper_from_the_command_line(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await _made(runtime, tmp_path)
    assert config.source_path is not None
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bygheartd",
            "--config",
            str(config.source_path),
            "keep",
            done.id[:10],
            "--take",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert f"{done.id}: keeping take 3" in result.stdout
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "bygheartd",
            "--config",
            str(config.source_path),
            "show",
            done.id,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert json.loads(shown.stdout)["keeper"]["take"] == 3
    listed = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(config.source_path), "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    [row] = json.loads(listed.stdout)  # a listing reads no result bodies, but the keeper
    assert (row["keeper"]["take"], row["keeper"]["by"]) == (3, "person")


async def test_a_keepers_folder_that_cannot_be_written_never_holds_a_song_back(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    config = make_config(simulator, folders={"keepers": str(blocker / "keepers")})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await _made(runtime, tmp_path)
        history = await runtime.service.history(done)
    noted = [e for e in history if e.event == "keeper not copied"]
    assert done.status is JobStatus.DONE and len(noted) == 1
    assert str(blocker / "keepers") in (noted[0].reason or "")
