"""Folders on a share that is not mounted (DESIGN, the drop folder): archive/ and failed/
are never created in a bare mount point, so a drop that must move there waits in the inbox
and is queued exactly once when the share is back; a failed job's copy is skipped, its
failure is not; and a state folder whose parent is missing is refused at once.

`bygheartd run` and the CLI run as child processes; the watcher runs in this process for
the parts that need its status line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import Daemon, Jobs, cli, list_json, wait_for
from conftest import MakeConfig, write_config

from bygheartd.config import Config, load_config
from bygheartd.folders.moves import FolderUnavailable, copy_no_clobber, move_no_clobber
from bygheartd.runtime import open_service
from bygheartd.service.service import SongService
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.watch.watcher import InboxWatcher

FOLDERS = ("inbox", "output", "archive", "failed", "drafts", "state")


def song_text(title: str, *, style: str = "synth pop") -> str:
    return (
        f"---\ntitle: {title}\nstyle: {style}\nmodel: bygheart-melody-fast\nduration: 10\n"
        f"---\n[Verse]\n{title} walks in the rain\n"
    )


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.2, audio_scale=0.02, seed=5)


class Install:
    """A config whose folders live in tmp_path, some of them on `share` (not mounted)."""

    def __init__(self, tmp_path: Path, sim: RunningSimulator | None, **on_share: str) -> None:
        self.root = tmp_path / "music"
        self.share = tmp_path / "share"  # absent: a network share that is not mounted
        folders = {name: str(self.root / name) for name in FOLDERS}
        folders |= {name: str(self.share / sub) for name, sub in on_share.items()}
        for name, folder in folders.items():
            if name not in on_share:
                Path(folder).mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "api": {"base_url": sim.base_url if sim else "http://127.0.0.1:9"},
            "folders": folders,
            "watch": {"settle_seconds": 0.1, "rescan_seconds": 600},
            "queue": {
                "poll_min_seconds": 0.1,
                "poll_max_seconds": 0.3,
                "retry_base_seconds": 0.1,
                "retry_max_seconds": 0.5,
            },
            "budget": {"plan": "pro"},
            "plugins": {"enabled": []},
            "retakes": {"max": 0},
        }
        self.config_path = write_config(tmp_path / "config.toml", sections)
        self.config: Config = load_config(self.config_path)
        env = {**os.environ, "BYGHEARTD_LOAD_PLUGINS": ""}
        self.daemon = Daemon(self.config_path, tmp_path / "daemon.log", env=env)


@pytest.fixture
def installs(api_key: str) -> Iterator[list[Install]]:
    made: list[Install] = []
    yield made
    for install in made:
        install.daemon.stop()


# -- the moves themselves ------------------------------------------------------------------


def test_a_move_into_a_folder_whose_parent_is_missing_is_refused_and_the_file_stays(
    tmp_path: Path,
) -> None:
    src = tmp_path / "song.txt"
    src.write_text("la la", encoding="utf-8")
    archive = tmp_path / "share" / "archive"
    with pytest.raises(FolderUnavailable) as refused:
        move_no_clobber(src, archive / "demo", root=archive)
    assert "folder unavailable" in str(refused.value) and str(archive) in str(refused.value)
    assert refused.value.root == archive
    with pytest.raises(FolderUnavailable):
        copy_no_clobber(src, archive, root=archive)
    assert src.read_text(encoding="utf-8") == "la la"
    assert not (tmp_path / "share").exists()


def test_a_missing_folder_whose_parent_exists_is_created_with_its_subfolders(
    tmp_path: Path,
) -> None:
    src = tmp_path / "song.txt"
    src.write_text("la la", encoding="utf-8")
    archive = tmp_path / "archive"
    moved = move_no_clobber(src, archive / "demo" / "deep", root=archive)
    assert moved == archive / "demo" / "deep" / "song.txt" and not src.exists()


# -- the drop folder -----------------------------------------------------------------------


class NotifySocket:
    """What systemd listens on (NOTIFY_SOCKET): the daemon's READY/STATUS datagrams."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def ready_status(self) -> str | None:
        """The STATUS= line sent with READY=1, once it has been sent."""
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode().split("\n"))
            except BlockingIOError:
                break
        for message in self.messages:
            if "READY=1" in message:
                return next((line for line in message if line.startswith("STATUS=")), "")
        return None


def test_a_drop_waits_in_the_inbox_for_an_unmounted_archive_and_is_queued_once_it_is_back(
    simulator: RunningSimulator,
    installs: list[Install],
    tmp_path: Path,
) -> None:
    install = Install(tmp_path, simulator, archive="archive")
    installs.append(install)
    archive = install.config.folders.archive
    inbox = install.config.folders.inbox
    notify = NotifySocket(tmp_path / "notify")
    install.daemon.env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    try:
        install.daemon.start()
        wait_for(lambda: notify.ready_status() is not None, what="READY=1", proc=install.daemon)
        status = notify.ready_status() or ""
    finally:
        notify.sock.close()
    assert (
        f"drop folder intake waits for the archive folder: folder unavailable: {archive}" in status
    )
    assert "dropped files that must move to the archive folder stay in the inbox" in (
        install.daemon.log()
    )
    text = song_text("Share Song")
    drop = inbox / "share.txt"
    drop.write_text(text, encoding="utf-8")
    wait_for(
        lambda: f"{drop} stays in the inbox until the archive folder" in install.daemon.log(),
        what="intake to leave the drop waiting",
        proc=install.daemon,
    )
    assert list_json(install.config_path) == []
    assert drop.read_text(encoding="utf-8") == text
    assert not install.share.exists(), "nothing is written into the bare mount point"

    install.share.mkdir()  # the share is mounted again
    jobs = Jobs(install.config)
    try:
        wait_for(lambda: (archive / "share.txt").exists(), what="the archived drop")
        [record] = list_json(install.config_path)
        assert record["source"] == "share.txt" and record["title"] == "Share Song"
        assert not drop.exists()
        assert (archive / "share.txt").read_text(encoding="utf-8") == text
        wait_for(
            lambda: jobs.statuses([record["id"]]) == ["done"],
            what="the song to finish",
            proc=install.daemon,
        )
        assert [r["id"] for r in list_json(install.config_path)] == [record["id"]]
    finally:
        jobs.close()
    assert "the archive folder" in install.daemon.log() and "available again" in (
        install.daemon.log()
    )


def test_a_job_that_fails_later_with_failed_unmounted_still_fails_and_says_why(
    simulator: RunningSimulator, installs: list[Install], tmp_path: Path
) -> None:
    install = Install(tmp_path, simulator, failed="failed")
    installs.append(install)
    folders = install.config.folders
    install.daemon.start()
    text = song_text("Doomed Song", style="synth pop FAIL")
    (folders.inbox / "doomed.txt").write_text(text, encoding="utf-8")
    jobs = Jobs(install.config)
    try:
        wait_for(
            lambda: "not copied to failed/" in [e.event for e in _history(jobs)],
            what="the skipped copy in the job's history",
            proc=install.daemon,
        )
        [record] = list_json(install.config_path)
        assert record["status"] == "failed" and record["source"] == "doomed.txt"
        [skipped] = [e for e in _history(jobs) if e.event == "not copied to failed/"]
        assert str(folders.failed) in (skipped.reason or "")
        assert "unavailable" in (skipped.reason or "")
    finally:
        jobs.close()
    assert (folders.archive / "doomed.txt").read_text(encoding="utf-8") == text
    assert not install.share.exists(), "failed/ is never created in a bare mount point"
    assert f"the failed folder is unavailable (folder unavailable: {folders.failed}" in (
        install.daemon.log()
    )


def _history(jobs: Jobs) -> list[Any]:
    return [e for job in jobs.store.list_jobs() for e in jobs.store.history(job.id)]


@pytest.fixture
async def watched_with_unmounted_failed(
    make_config: MakeConfig, tmp_path: Path
) -> AsyncIterator[tuple[Config, SongService, InboxWatcher]]:
    failed = tmp_path / "share" / "failed"
    config = make_config(folders={"failed": str(failed)})
    failed.rmdir()
    failed.parent.rmdir()
    service = open_service(config)
    watcher = InboxWatcher(config, service, health_seconds=0.05)
    try:
        await watcher.start()
        try:
            yield config, service, watcher
        finally:
            await watcher.stop()
    finally:
        await service.close()


@pytest.mark.anyio
async def test_a_rejected_drop_waits_for_an_unmounted_failed_folder_then_gets_its_note(
    watched_with_unmounted_failed: tuple[Config, SongService, InboxWatcher],
) -> None:
    config, service, watcher = watched_with_unmounted_failed
    failed = config.folders.failed
    assert watcher.status_text == (
        f"drop folder intake waits for the failed folder: {FolderUnavailable(failed)}"
    )
    drop = config.folders.inbox / "song.docx"
    drop.write_bytes(b"not a song file")
    outcome = await _next_outcome(watcher, drop)
    assert outcome.kind == "waiting" and outcome.waits_for == failed
    assert drop.read_bytes() == b"not a song file"
    assert not failed.parent.exists()
    assert await service.list() == []

    failed.parent.mkdir()  # mounted again
    rejected = await _next_outcome(watcher, drop, after=outcome)
    assert rejected.kind == "rejected" and rejected.moved_to == failed / "song.docx"
    assert "is not a song file" in (failed / "song.docx.error.txt").read_text(encoding="utf-8")
    assert not drop.exists() and watcher.status_text is None
    assert await service.list() == []


async def _next_outcome(watcher: InboxWatcher, path: Path, after: Any = None) -> Any:
    """The watcher's next outcome for `path` (after the outcome `after`)."""
    import asyncio

    async def found() -> Any:
        while True:
            mine = [o for o in watcher.outcomes if o.path == path]
            if after in mine:
                mine = mine[mine.index(after) + 1 :]
            if mine:
                return mine[0]
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(found(), 10)


# -- the state folder ----------------------------------------------------------------------


def test_run_refuses_a_state_folder_whose_parent_is_missing_and_creates_nothing(
    installs: list[Install], tmp_path: Path
) -> None:
    install = Install(tmp_path, None, state="state")
    state = install.config.folders.state
    assert state is not None
    done = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(install.config_path), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=install.daemon.env,
    )
    assert done.returncode == 1
    assert f"error: the state folder {state} is missing and so is its parent" in done.stderr
    assert "Mount the share, create the folder" in done.stderr
    assert "[folders] state" in done.stderr
    assert "waits" not in done.stderr
    assert not install.share.exists()


def test_list_refuses_a_state_folder_whose_parent_is_missing(
    installs: list[Install], tmp_path: Path
) -> None:
    install = Install(tmp_path, None, state="state")
    done = cli(install.config_path, "list", "--json")
    assert done.returncode == 1
    assert "is missing and so is its parent" in done.stderr and "[folders] state" in done.stderr
    assert not install.share.exists()


def test_config_check_says_what_each_unmounted_folder_means(
    installs: list[Install], tmp_path: Path
) -> None:
    install = Install(tmp_path, None, state="state", inbox="inbox", archive="archive")
    done = cli(install.config_path, "config", "check")
    inbox, archive = install.config.folders.inbox, install.config.folders.archive
    assert "nothing works without the job store" in done.stdout
    assert (
        f"inbox folder {inbox} is missing and so is its parent (an unmounted share?): the drop "
        "folder is paused until it appears; it is never created in a bare mount point"
    ) in done.stdout
    assert f"archive folder {archive} is missing" in done.stdout
    assert "dropped songs stay in the inbox until it appears" in done.stdout
    assert not install.share.exists()


def test_the_default_state_folder_is_created_with_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg_state = tmp_path / "fresh-account" / ".local" / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg_state))
    install = Install(tmp_path, None)
    raw = install.config_path.read_text(encoding="utf-8")
    lines = [line for line in raw.splitlines() if not line.startswith("state")]
    install.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_config(install.config_path).folders.state is None
    done = cli(install.config_path, "list", "--json")
    assert done.returncode == 0, done.stderr
    assert (xdg_state / "bygheartd" / "jobs.sqlite3").is_file()


ALBUM = """\
album: Night Drive
style: synthwave
duration: 20
tracks:
  - title: Neon On
    lyrics: |
      [Verse]
      Neon on, the city hums
  - title: Overpass
    description: an instrumental interlude
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "text", "tracks"),
    [("night.txt", song_text("Night"), 1), ("night-drive.album.yaml", ALBUM, 2)],
    ids=["song", "album"],
)
async def test_intake_makes_no_job_until_the_archive_share_is_there(
    make_config: MakeConfig, tmp_path: Path, name: str, text: str, tracks: int
) -> None:
    from bygheartd.watch.intake import Intake

    archive = tmp_path / "share" / "archive"
    config = make_config(folders={"archive": str(archive)})
    archive.rmdir()
    archive.parent.rmdir()
    service = open_service(config)
    try:
        intake = Intake(config, service)
        drop = config.folders.inbox / name
        drop.write_text(text, encoding="utf-8")
        for _ in range(2):  # a retry (a rescan) waits again, and still makes no job
            waiting = await intake.process(drop)
            assert waiting.kind == "waiting" and waiting.waits_for == archive
            assert await service.list() == []
        assert drop.read_text(encoding="utf-8") == text and not archive.parent.exists()

        archive.parent.mkdir()
        accepted = await intake.process(drop)
        assert accepted.kind == "accepted" and accepted.moved_to == archive / name
        assert len(await service.list()) == tracks
        assert (await intake.process(drop)).kind == "gone"
        assert len(await service.list()) == tracks
    finally:
        await service.close()
