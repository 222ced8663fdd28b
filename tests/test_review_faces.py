"""Review findings on the faces (drop folder, MCP) and the plugins, each pinned by a test.

Real files in tmp dirs, the real store and service, the official MCP client in memory,
real audio for the first-party plugins.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig
from mcp import Client
from mcp.types import CallToolResult, TextContent
from plugin_fixtures.factories import make_job, plugin_folder, write_audio
from test_plugins_webhook import Receiver

from bygheartd.config import Config
from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd.logs import clear_secrets, setup_logging
from bygheartd.mcp.server import build_server
from bygheartd.service.runtime import Runtime
from bygheartd.service.service import SongService
from bygheartd.store.store import Store
from bygheartd.watch.intake import Intake

pytestmark = pytest.mark.anyio

SONG = b"---\ntitle: Night Drive\nstyle: synthwave\n---\n[Verse]\nlights on the highway\n"
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n"


# -- drop folder --------------------------------------------------------------------------


def _intake(config: Config) -> Iterator[tuple[Intake, SongService]]:
    store = Store.open(config.state_dir)
    service = SongService(config, store)
    try:
        yield Intake(config, service), service
    finally:
        store.close()


@pytest.fixture
def intake(make_config: MakeConfig) -> Iterator[tuple[Intake, SongService]]:
    yield from _intake(make_config())


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A folder on another file system than tmp_path (tmpfs), for cross-device moves."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev:
        pytest.skip("needs /dev/shm on another file system than /tmp")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="bygheartd-review-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_file_whose_name_is_not_utf8_goes_to_failed_with_a_note(
    intake: tuple[Intake, SongService],
) -> None:
    take, service = intake
    inbox, failed = take.inbox, take.config.folders.failed
    raw = b"caf\xe9.txt"  # Latin-1 from an old Samba client: not UTF-8
    (inbox / os.fsdecode(raw)).write_bytes(SONG)
    outcome = take.process(inbox / os.fsdecode(raw))
    assert outcome.kind == "rejected"
    assert service.list() == []
    assert os.listdir(os.fsencode(inbox)) == []
    assert sorted(os.listdir(os.fsencode(failed))) == [raw, raw + b".error.txt"]
    note = (failed / os.fsdecode(raw + b".error.txt")).read_text(encoding="utf-8")
    assert "UTF-8" in note and "rename" in note


def test_a_symlink_rejected_across_file_systems_stays_a_link_and_copies_nothing(
    make_config: MakeConfig, other_fs: Path, tmp_path: Path
) -> None:
    config = make_config(folders={"failed": str(other_fs / "failed")})
    secret = tmp_path / "api-key"
    secret.write_text("bgh_live_do_not_copy_me\n")
    for take, service in _intake(config):
        link = take.inbox / "song.txt"
        link.symlink_to(secret)
        assert take.process(link).kind == "rejected"
        assert service.list() == []
    moved = other_fs / "failed" / "song.txt"
    assert moved.is_symlink() and os.readlink(moved) == str(secret)
    assert not link.exists() and not link.is_symlink()
    texts = [p.read_bytes() for p in (other_fs / "failed").iterdir() if not p.is_symlink()]
    assert all(b"do_not_copy_me" not in text for text in texts)
    assert "symbolic link" in (other_fs / "failed" / "song.txt.error.txt").read_text()


# -- MCP ----------------------------------------------------------------------------------


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    async with Runtime(make_config(None), owner="test", engine=False) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def generate(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("generate_song", args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def test_a_new_idempotency_key_is_never_answered_with_another_keys_job(
    idle_runtime: Runtime,
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        first = await generate(client, lyrics=LYRICS, idempotency_key="call-1")
        second = await generate(client, lyrics=LYRICS, idempotency_key="call-2")
        await client.call_tool("cancel_song", {"job_id": first["id"]})
        again = await generate(client, lyrics=LYRICS, idempotency_key="call-2")
    # "call-2" must name one job, whatever happened to the job of "call-1".
    assert again["id"] == second["id"]
    assert second["id"] != first["id"] and second["deduplicated"] is False


@pytest.mark.parametrize("ref", ["bad\x00name.md", "~no-such-user-here/song.md"])
async def test_an_unusable_lyrics_file_name_is_refused_with_a_message(
    idle_runtime: Runtime, ref: str
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", {"lyrics_file": ref})
    assert result.is_error
    assert "lyrics_file" in text_of(result)
    assert idle_runtime.service.list() == []


# -- plugins ------------------------------------------------------------------------------


def first_party(enabled: list[str], **tables: dict[str, Any]) -> PluginHost:
    host = PluginHost.load(PluginSettings(enabled=enabled, tables=tables, load_env=None))
    assert host.active == enabled
    return host


@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
async def test_loudnorm_keeps_the_files_permissions(tmp_path: Path, suffix: str) -> None:
    song = write_audio(tmp_path / f"song{suffix}", amplitude=0.02)
    song.chmod(0o644)  # readable by the music server that runs as another user
    outcome = await first_party(["loudnorm"]).on_complete(make_job(), [song])
    assert outcome.failures == []
    assert "input_lufs" in outcome.sidecar["loudnorm"][song.name]  # it was rewritten
    assert stat.S_IMODE(song.stat().st_mode) == 0o644


async def test_upload_gives_library_copies_the_permissions_of_the_song(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.mp3", seconds=0.5)
    song.chmod(0o644)
    library = tmp_path / "library"
    outcome = await first_party(["upload"], upload={"library": str(library)}).on_complete(
        make_job(), [song]
    )
    assert outcome.failures == []
    [copy] = outcome.sidecar["upload"]["library"]
    assert stat.S_IMODE(Path(copy).stat().st_mode) == 0o644


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    import threading

    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_plugin_secret_never_reaches_the_log_even_at_debug(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/T0-secret-path-4711"
    monkeypatch.setenv("REVIEW_HOOK_URL", token_url)
    stream = io.StringIO()
    clear_secrets()
    setup_logging("debug", stream=stream)
    try:
        host = first_party(["webhook"], webhook={"url": {"env": "REVIEW_HOOK_URL"}})
        failures = await host.on_failed(make_job(), "the server said no")
    finally:
        setup_logging("info", stream=io.StringIO())
        clear_secrets()
    assert failures == [] and len(receiver.requests) == 1
    assert "HTTP Request" in stream.getvalue()  # httpx logs each request at debug
    assert "T0-secret-path-4711" not in stream.getvalue()


async def test_a_plugin_raising_cancelled_error_is_a_hook_failure_not_a_cancel(
    tmp_path: Path,
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        canceller="""
            import asyncio
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            async def on_failed(job):
                task = asyncio.create_task(asyncio.sleep(10))
                await asyncio.sleep(0)
                task.cancel()
                await task  # raises CancelledError: the plugin's own task, not ours
        """,
    )
    host = PluginHost.load(PluginSettings(paths=[tmp_path / "plugins"], load_env=None))
    failures = await asyncio.wait_for(host.on_failed(make_job(), "x"), 5)
    assert [f.plugin for f in failures] == ["canceller"]
    assert "CancelledError" in failures[0].error


# -- the watcher --------------------------------------------------------------------------


async def until(cond: Any, timeout: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def watched(make_config: MakeConfig) -> AsyncIterator[tuple[Config, SongService, Any]]:
    from bygheartd.watch.watcher import InboxWatcher

    config = make_config(watch={"settle_seconds": 0.1, "rescan_seconds": 600})
    store = Store.open(config.state_dir)
    service = SongService(config, store)
    watcher = InboxWatcher(config, service, health_seconds=0.05)
    await watcher.start()
    try:
        yield config, service, watcher
    finally:
        await watcher.stop()
        store.close()


async def test_an_inbox_replaced_between_health_checks_is_watched_and_locked_again(
    watched: tuple[Config, SongService, Any],
) -> None:
    from bygheartd.watch.inbox import InboxBusy, InboxLock

    config, service, _watcher = watched
    inbox = config.folders.inbox
    inbox.rename(inbox.with_name("inbox-old"))  # a share remounted, a folder re-created
    inbox.mkdir()
    (inbox / "after.txt").write_bytes(SONG)  # written in place: native events only
    await until(lambda: len(service.list()) == 1, what="the file in the new inbox")
    with pytest.raises(InboxBusy):  # and no second daemon may take the new inbox
        InboxLock(inbox).acquire()


async def test_a_sync_hook_raising_stop_iteration_fails_at_once_not_at_the_time_limit(
    tmp_path: Path,
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        exhausted="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_failed(job):
                next(iter([]))  # a plugin bug: StopIteration escapes
        """,
    )
    settings = PluginSettings(paths=[tmp_path / "plugins"], load_env=None)
    settings.hook_timeout_seconds = 30
    host = PluginHost.load(settings)
    failures = await asyncio.wait_for(host.on_failed(make_job(), "x"), 5)
    assert [(f.plugin, f.timed_out) for f in failures] == [("exhausted", False)]
    assert "StopIteration" in failures[0].error


def test_a_symlink_loop_in_the_inbox_is_rejected_not_stuck(
    intake: tuple[Intake, SongService],
) -> None:
    take, _service = intake
    (take.inbox / "b.txt").symlink_to("a.txt")
    (take.inbox / "a.txt").symlink_to("b.txt")
    assert take.process(take.inbox / "a.txt").kind == "rejected"
    assert "symbolic link" in (take.config.folders.failed / "a.txt.error.txt").read_text()
    assert (take.config.folders.failed / "a.txt").is_symlink()


def test_source_audio_that_is_a_symlink_loop_is_rejected_not_stuck(
    intake: tuple[Intake, SongService],
) -> None:
    take, _service = intake
    (take.inbox / "x.wav").symlink_to("y.wav")
    (take.inbox / "y.wav").symlink_to("x.wav")
    song = take.inbox / "cover.txt"
    song.write_bytes(b"---\ntask_type: cover\nsource_audio: x.wav\n---\nla\n")
    outcome = take.process(song)
    assert outcome.kind in ("rejected", "accepted")
    assert not song.exists()
