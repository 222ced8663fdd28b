"""The `on_complete` hook: added files, sidecar data, and failures that keep the job's audio."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_fixtures.factories import make_job, plugin_folder

from bygheartd.hooks.host import PluginHost, PluginSettings

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _forget_local_modules() -> Iterator[None]:
    yield
    for name in [m for m in sys.modules if m.startswith("bygheartd_plugins_local.")]:
        del sys.modules[name]


@pytest.fixture
def song(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    out.mkdir()
    path = out / "midnight-god-mode.mp3"
    path.write_bytes(b"ID3 not really audio")
    return path


def load(tmp_path: Path, enabled: list[str], **sources: str) -> PluginHost:
    plugin_folder(tmp_path / "plugins", **sources)
    return PluginHost.load(
        PluginSettings(
            enabled=enabled, paths=[tmp_path / "plugins"], hook_timeout_seconds=5, load_env=None
        )
    )


async def test_hook_on_complete_collects_added_files_and_sidecar_data(
    tmp_path: Path, song: Path
) -> None:
    host = load(
        tmp_path,
        ["stems", "notes", "lister"],
        stems="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_complete(files):
                stem = files[0].with_name("midnight-god-mode.vocals.wav")
                stem.write_bytes(b"RIFF")
                return [stem]
        """,
        notes="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            async def on_complete(files):
                (files[0].parent / "notes.txt").write_text("hi")
                return {"files": ["notes.txt"], "sidecar": {"count": len(files)}}
        """,
        lister="""
            from bygheartd.hooks.host import hookimpl
            seen = []
            @hookimpl
            def on_complete(job, files):
                seen.extend(f.name for f in files)
        """,
    )
    outcome = await host.on_complete(make_job(), [song])
    assert outcome.failures == []
    assert outcome.added_files == [
        song.with_name("midnight-god-mode.vocals.wav"),
        song.with_name("notes.txt"),
    ]
    assert outcome.sidecar == {"notes": {"count": 2}}
    lister = sys.modules["bygheartd_plugins_local.lister"]
    assert lister.seen == ["midnight-god-mode.mp3", "midnight-god-mode.vocals.wav", "notes.txt"]


async def test_on_complete_failure_is_recorded_and_the_files_are_kept(
    tmp_path: Path, song: Path
) -> None:
    host = load(
        tmp_path,
        ["broken", "ghost", "after"],
        broken="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_complete(files):
                raise OSError(28, "No space left on device")
        """,
        ghost="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_complete():
                return ["/nonexistent/file.wav"]
        """,
        after="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_complete():
                return {"sidecar": {"ran": True}}
        """,
    )
    outcome = await host.on_complete(make_job(), [song])
    assert [(f.plugin, f.error) for f in outcome.failures] == [
        ("broken", "OSError: [Errno 28] No space left on device"),
        ("ghost", "returned a file that does not exist: /nonexistent/file.wav"),
    ]
    assert str(outcome.failures[0]) == (
        "plugin 'broken' failed in on_complete: OSError: [Errno 28] No space left on device"
    )
    assert outcome.sidecar == {"after": {"ran": True}}
    assert song.exists()


async def test_on_complete_sidecar_data_must_be_json(tmp_path: Path, song: Path) -> None:
    host = load(
        tmp_path,
        [],
        odd="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_complete():
                return {"sidecar": {"when": object()}}
        """,
    )
    outcome = await host.on_complete(make_job(), [song])
    [failure] = outcome.failures
    assert failure.error.startswith("sidecar data is not JSON-serialisable")
    assert outcome.sidecar == {}
