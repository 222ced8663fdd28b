"""Output bases: two jobs never share one. A base a held download still owns is not free,
nor is one whose take names overlap a reserved take, and a job that fails removes only
its own part files, never another job's download in progress.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from _jobs import song
from conftest import MakeConfig

from bygheartd.engine.naming import choose_base
from bygheartd.jobs import JobStatus, utcnow
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator
from bygheartd.store.store import Store

pytestmark = pytest.mark.anyio


def test_a_download_held_for_later_keeps_its_output_base(make_config: MakeConfig) -> None:
    config = make_config()
    store = Store.open(config.state_dir)
    held = store.insert_job(title="Song", model=None, request={}, api_body={}, credits=1)
    store.transition(  # a download held before its first byte: no file on disk yet
        held.id,
        JobStatus.HELD,
        event="held (download)",
        base_name="song",
        hold_kind="download",
        result={"hold_target": "downloading", "outputs": [{"file": "/a.mp3"}]},
        resumes_at=utcnow() + timedelta(minutes=1),
    )
    reserved = store.reserved_take_stems()
    store.close()
    assert choose_base(config.folders.output, "Song", "x" * 14, reserved) == "song-2"


@pytest.mark.parametrize(
    ("title", "takes", "reserved", "expected"),
    [("Song", 2, {"song.take2"}, "song-2"), ("Song 2", 1, {"song", "song-2"}, "song-2-2")],
    ids=["a-second-take-reserved", "a-first-take-reserved"],
)
def test_a_base_whose_take_names_overlap_a_reserved_take_is_not_free(
    tmp_path: Path, title: str, takes: int, reserved: set[str], expected: str
) -> None:
    assert choose_base(tmp_path, title, "x" * 14, reserved, takes) == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [("song.take3.flac", "song-2"), ("song.json", "song-2"), ("song-2.mp3", "song-3")],
    ids=["take", "sidecar", "legacy"],
)
def test_a_base_with_any_file_of_its_own_on_disk_is_not_free(
    tmp_path: Path, existing: str, expected: str
) -> None:
    """Takes are `song.mp3`, `song.take2.mp3`, ...; `song-2.mp3` may be a second take written
    by earlier versions, so it keeps the base `song` taken (and is `song-2`'s own take)."""
    (tmp_path / existing).write_bytes(b"x")
    assert choose_base(tmp_path, "Song", "x" * 14, set(), 2) == expected


async def test_a_failing_job_removes_only_its_own_part_files(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    output = config.folders.output
    (output / ".song.json.tmp").mkdir()  # job "Song" cannot finish: it fails
    other = output / "songbird.part"  # another job's download in progress
    other.write_bytes(b"ID3 half a song")
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, "a.txt", title="Song"))
        job = await runtime.service.wait(job.id, timeout=20)
    assert job.status is JobStatus.FAILED
    assert other.exists()
