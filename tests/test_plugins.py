"""The plugin host: loading, ordering, isolation of failures, and each hook's calling rules."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures.factories import FIXTURES, make_job, plugin_folder

from bygheartd.hooks.host import (
    PluginError,
    PluginHost,
    PluginSettings,
    RejectJob,
    hookimpl,
)
from bygheartd.jobs import JobStatus

pytestmark = pytest.mark.anyio

RECORDER = """
    import threading
    from bygheartd.hooks.host import hookimpl

    calls = []

    @hookimpl
    def before_submit(job, request, config):
        calls.append(("before_submit", job.id, dict(request), config))

    @hookimpl
    def after_submit(job, task_id, config):
        calls.append(("after_submit", job.id, task_id, config))

    @hookimpl
    async def on_failed(job, reason):
        calls.append(("on_failed", job.id, reason))

    @hookimpl
    def on_held(reason):
        calls.append(("on_held", reason, threading.get_ident()))
"""


@pytest.fixture(autouse=True)
def _forget_local_modules() -> Iterator[None]:
    yield
    for name in [m for m in sys.modules if m.startswith("bygheartd_plugins_local.")]:
        del sys.modules[name]


def settings(tmp_path: Path, **kwargs: Any) -> PluginSettings:
    kwargs.setdefault("paths", [tmp_path / "plugins"])
    kwargs.setdefault("load_env", None)
    kwargs.setdefault("hook_timeout_seconds", 5.0)
    return PluginSettings(**kwargs)


def local(name: str) -> Any:
    return sys.modules[f"bygheartd_plugins_local.{name}"]


def info(host: PluginHost, name: str) -> Any:
    return next(i for i in host.describe() if i.name == name)


def copy_broken(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    for name in names:
        source = next((FIXTURES / "broken").glob(f"{name}.py*"))
        shutil.copy(source, folder / f"{name}.py")
    return folder


def test_public_names_import_from_the_plugins_module() -> None:
    from bygheartd.errors import BygheartdError

    assert issubclass(RejectJob, BygheartdError)
    assert hookimpl.project_name == "bygheartd"


def test_path_plugin_loads_and_is_described_with_its_hooks(tmp_path: Path) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path))
    recorder = info(host, "recorder")
    assert recorder.enabled and recorder.error is None
    assert recorder.source == f"path:{tmp_path / 'plugins' / 'recorder.py'}"
    assert recorder.hooks == ("after_submit", "before_submit", "on_failed", "on_held")
    assert recorder.as_record()["hooks"] == list(recorder.hooks)


async def test_hook_after_submit_passes_task_id_and_the_plugins_own_config(
    tmp_path: Path,
) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    tables = {"recorder": {"colour": "blue"}, "other": {"x": 1}}
    host = PluginHost.load(settings(tmp_path, tables=tables))
    failures = await host.after_submit(make_job(), "task-9")
    assert failures == []
    assert local("recorder").calls == [
        ("after_submit", "01JVX3K9TESTJOB", "task-9", {"colour": "blue"})
    ]


async def test_hook_on_failed_awaits_async_implementations(tmp_path: Path) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path))
    assert await host.on_failed(make_job(), "generation failed") == []
    assert local("recorder").calls == [("on_failed", "01JVX3K9TESTJOB", "generation failed")]


async def test_hook_on_held_runs_sync_implementations_off_the_event_loop(tmp_path: Path) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path))
    assert await host.on_held(make_job(), "credit limit reached") == []
    [(hook, reason, thread_id)] = local("recorder").calls
    assert (hook, reason) == ("on_held", "credit limit reached")
    assert thread_id != threading.get_ident()


async def test_hook_on_done_gets_the_finished_job_and_a_baseexception_is_only_a_failure(
    tmp_path: Path,
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        a_interrupts="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_done(job):
                raise KeyboardInterrupt("not the daemon's Ctrl-C")
        """,
        b_records="""
            from bygheartd.hooks.host import hookimpl
            calls = []
            @hookimpl
            async def on_done(job, files):
                calls.append((job.status.value, [f.name for f in files]))
        """,
    )
    host = PluginHost.load(settings(tmp_path))
    song = tmp_path / "song.mp3"
    [failure] = await host.on_done(make_job(status=JobStatus.DONE), [song])
    assert (failure.plugin, failure.hook) == ("a_interrupts", "on_done")
    assert "KeyboardInterrupt" in failure.error
    assert local("b_records").calls == [("done", ["song.mp3"])]


async def test_a_raising_hook_is_recorded_and_later_plugins_still_run(tmp_path: Path) -> None:
    plugin_folder(
        tmp_path / "plugins",
        a_raises="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_failed(reason):
                raise RuntimeError("smtp down\\nsecond line")
        """,
        b_records="""
            from bygheartd.hooks.host import hookimpl
            calls = []
            @hookimpl
            def on_failed(reason):
                calls.append(reason)
        """,
    )
    host = PluginHost.load(settings(tmp_path))
    [failure] = await host.on_failed(make_job(), "boom")
    assert (failure.plugin, failure.hook, failure.timed_out) == ("a_raises", "on_failed", False)
    assert failure.error == "RuntimeError: smtp down"
    assert local("b_records").calls == ["boom"]


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


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_hanging_hook_times_out_and_the_rest_still_run(tmp_path: Path, kind: str) -> None:
    hang = (
        "import asyncio\n@hookimpl\nasync def after_submit(task_id):\n    await asyncio.sleep(60)\n"
        if kind == "async"
        else "import threading\nrelease = threading.Event()\n@hookimpl\n"
        "def after_submit(task_id):\n    release.wait(30)\n"
    )
    plugin_folder(
        tmp_path / "plugins",
        a_hangs="from bygheartd.hooks.host import hookimpl\n" + hang,
        b_records=(
            "from bygheartd.hooks.host import hookimpl\ncalls = []\n"
            "@hookimpl\ndef after_submit(task_id):\n    calls.append(task_id)\n"
        ),
    )
    host = PluginHost.load(settings(tmp_path, hook_timeout_seconds=0.05))
    try:
        [failure] = await host.after_submit(make_job(), "t-1")
    finally:
        if kind == "sync":
            local("a_hangs").release.set()
    assert failure.timed_out and failure.plugin == "a_hangs"
    assert failure.error == "timed out after 0.05 s"
    assert local("b_records").calls == ["t-1"]


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


async def test_hook_before_submit_merges_changes_in_order(tmp_path: Path) -> None:
    plugin_folder(
        tmp_path / "plugins",
        first="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def before_submit(request):
                return {"bpm": 120, "negative": None}
        """,
        second="""
            from bygheartd.hooks.host import hookimpl
            seen = []
            @hookimpl
            async def before_submit(request):
                seen.append(dict(request))
                return {"style": request["style"] + ", 120 bpm"}
        """,
    )
    host = PluginHost.load(settings(tmp_path, enabled=["first", "second"]))
    request = {"style": "pop", "negative": "lo-fi"}
    changes = await host.before_submit(make_job(), request)
    assert changes == {"bpm": 120, "negative": None, "style": "pop, 120 bpm"}
    assert local("second").seen == [{"style": "pop", "bpm": 120}]
    assert request == {"style": "pop", "negative": "lo-fi"}  # the caller's dict is untouched


async def test_before_submit_reject_propagates_with_the_plugin_name(tmp_path: Path) -> None:
    plugin_folder(
        tmp_path / "plugins",
        gate="""
            from bygheartd.hooks.host import RejectJob, hookimpl
            @hookimpl
            def before_submit(request):
                if "explicit" in request.get("style", ""):
                    raise RejectJob("explicit styles are not allowed here")
        """,
    )
    host = PluginHost.load(settings(tmp_path))
    with pytest.raises(RejectJob) as caught:
        await host.before_submit(make_job(), {"style": "explicit rap"})
    assert caught.value.reason == "explicit styles are not allowed here"
    assert caught.value.plugin == "gate"
    assert await host.before_submit(make_job(), {"style": "folk"}) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise KeyError('style')", "plugin 'bad' failed in before_submit: KeyError: 'style'"),
        ("return ['not', 'a', 'dict']", "returned list, not a dict or None"),
    ],
)
async def test_before_submit_failure_raises_plugin_error_fail_safe(
    tmp_path: Path, body: str, message: str
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        bad="from bygheartd.hooks.host import hookimpl\n"
        f"@hookimpl\ndef before_submit():\n    {body}\n",
    )
    host = PluginHost.load(settings(tmp_path))
    with pytest.raises(PluginError, match=re.escape(message)) as caught:
        await host.before_submit(make_job(), {})
    assert caught.value.plugin == "bad"


async def test_before_submit_timeout_raises_plugin_error(tmp_path: Path) -> None:
    plugin_folder(
        tmp_path / "plugins",
        slow="""
            import asyncio
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            async def before_submit():
                await asyncio.sleep(60)
        """,
    )
    host = PluginHost.load(settings(tmp_path, hook_timeout_seconds=0.05))
    with pytest.raises(PluginError, match=re.escape("timed out after 0.05 s")):
        await host.before_submit(make_job(), {})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("syntax_error", "failed to load: SyntaxError"),
        ("import_error", "No module named 'bygheartd_no_such_dependency'"),
        ("misspelled_hook", "unknown hook 'on_compelte' (did you mean 'on_complete'?)"),
        ("wrong_argument", "colour"),
    ],
)
def test_a_broken_plugin_is_disabled_with_a_clear_error(
    tmp_path: Path, name: str, message: str
) -> None:
    copy_broken(tmp_path, name)
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path))
    broken = info(host, name)
    assert not broken.enabled
    assert message in (broken.error or "")
    assert host.active == ["recorder"]


def test_unknown_enabled_name_is_a_load_error_with_a_suggestion(tmp_path: Path) -> None:
    host = PluginHost.load(settings(tmp_path, enabled=["tag"]))
    entry = info(host, "tag")
    assert not entry.enabled
    assert entry.error == "no plugin named 'tag' is installed: did you mean 'tags'?"


def test_first_party_plugins_run_only_when_enabled_and_in_that_order(tmp_path: Path) -> None:
    plugin_folder(tmp_path / "plugins", zeta=RECORDER, alpha=RECORDER)
    host = PluginHost.load(settings(tmp_path, enabled=["upload", "zeta", "tags"]))
    assert host.active == ["upload", "zeta", "tags", "alpha"]
    webhook = info(host, "webhook")
    assert (webhook.enabled, webhook.source, webhook.error) == (False, "first-party", None)


def test_disabled_keeps_a_path_plugin_off(tmp_path: Path) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path, disabled=["recorder"]))
    assert host.active == []
    assert not info(host, "recorder").enabled


@pytest.mark.parametrize(
    ("load_env", "active"),
    [("", []), ("recorder", ["recorder"]), ("webhook, recorder", ["webhook", "recorder"])],
)
def test_load_plugins_variable_overrides_enabled_and_disabled(
    tmp_path: Path, load_env: str, active: list[str]
) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER, other=RECORDER)
    host = PluginHost.load(
        settings(tmp_path, enabled=["tags"], disabled=["recorder"], load_env=load_env)
    )
    assert host.active == active


def test_load_plugins_variable_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    monkeypatch.setenv("BYGHEARTD_LOAD_PLUGINS", "")
    host = PluginHost.load(PluginSettings(enabled=["tags"], paths=[tmp_path / "plugins"]))
    assert host.active == []


async def test_secrets_are_resolved_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    monkeypatch.setenv("RECORDER_TOKEN", "from-the-env")
    table = {
        "token": {"env": "RECORDER_TOKEN"},
        "nested": {"password": {"file": str(tmp_path / "secret.txt")}},
        "plain": {"env": "X", "other": 1},
    }
    host = PluginHost.load(settings(tmp_path, tables={"recorder": table}))
    await host.after_submit(make_job(), "t")
    config = local("recorder").calls[0][3]
    assert config == {
        "token": "from-the-env",
        "nested": {"password": "from-a-file"},
        "plain": {"env": "X", "other": 1},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"env": "NOT_SET_ANYWHERE_42"}, "plugins.recorder.token: environment variable"),
        ({"file": "/nonexistent/secret"}, "plugins.recorder.token: cannot read secret file"),
    ],
)
def test_an_unresolvable_secret_disables_the_plugin_naming_the_key(
    tmp_path: Path, value: dict[str, str], message: str
) -> None:
    plugin_folder(tmp_path / "plugins", recorder=RECORDER)
    host = PluginHost.load(settings(tmp_path, tables={"recorder": {"token": value}}))
    entry = info(host, "recorder")
    assert not entry.enabled and message in (entry.error or "")


async def test_hook_errors_never_show_a_resolved_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        leaky="""
            from bygheartd.hooks.host import hookimpl
            @hookimpl
            def on_failed(config):
                raise ValueError(f"bad token {config['token']}")
        """,
    )
    monkeypatch.setenv("LEAKY_TOKEN", "s3cr3t-value")
    host = PluginHost.load(settings(tmp_path, tables={"leaky": {"token": {"env": "LEAKY_TOKEN"}}}))
    [failure] = await host.on_failed(make_job(), "x")
    assert "s3cr3t-value" not in str(failure)
    assert failure.error == "ValueError: bad token ***"


async def test_a_rejection_reason_never_shows_a_resolved_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_folder(
        tmp_path / "plugins",
        gate="""
            from bygheartd.hooks.host import RejectJob, hookimpl
            @hookimpl
            def before_submit(config):
                raise RejectJob(f"quota service refused token {config['token']}")
        """,
    )
    monkeypatch.setenv("GATE_TOKEN", "s3cr3t-gate")
    host = PluginHost.load(settings(tmp_path, tables={"gate": {"token": {"env": "GATE_TOKEN"}}}))
    with pytest.raises(RejectJob) as caught:
        await host.before_submit(make_job(), {"title": "x"})
    assert caught.value.reason == "quota service refused token ***"
    assert caught.value.plugin == "gate"
