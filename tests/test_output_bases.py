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
from bygheartd.service.runtime import Runtime
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
    [("Song", 2, {"song-2"}, "song-3"), ("Song 2", 1, {"song", "song-2"}, "song-2-2")],
    ids=["a-second-take-on-a-reserved-base", "a-first-take-on-a-reserved-second-take"],
)
def test_a_base_whose_take_names_overlap_a_reserved_take_is_not_free(
    tmp_path: Path, title: str, takes: int, reserved: set[str], expected: str
) -> None:
    """`song`'s second take `song-2.mp3` is also the first take of a base `song-2`."""
    assert choose_base(tmp_path, title, "x" * 14, reserved, takes) == expected


async def test_a_failing_job_removes_only_its_own_part_files(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    output = config.folders.output
    (output / ".song.json.tmp").mkdir()  # job "Song" cannot finish: it fails
    other = output / "songbird.part"  # another job's download in progress
    other.write_bytes(b"ID3 half a song")
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Song"))
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
    assert job.status is JobStatus.FAILED
    assert other.exists()
