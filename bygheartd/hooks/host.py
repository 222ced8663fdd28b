"""The plugin host: discovers, loads and calls plugins so that none can crash the daemon.

Loading is isolated per plugin (a bad one is disabled with a message), and every hook
implementation is called on its own, with a time limit, off the loop when it is blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import difflib
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from bygheartd.errors import PluginError, RejectJob
from bygheartd.hooks import specs as hookspecs
from bygheartd.hooks.discovery import (
    Candidate,
    entry_point_candidates,
    first_party_candidates,
    path_candidates,
    resolve_secrets,
)
from bygheartd.hooks.errors import SecretError
from bygheartd.hooks.specs import hookimpl
from bygheartd.jobs import Job
from bygheartd.logs import register_secret

logger = logging.getLogger(__name__)


__all__ = [
    "CompleteOutcome",
    "HookFailure",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginSettings",
    "RejectJob",
    "hookimpl",
]

HOOK_NAMES = (
    "before_submit",
    "after_submit",
    "on_complete",
    "on_done",
    "on_failed",
    "on_held",
    "on_retake",
    "on_album_complete",
)


@dataclass
class PluginSettings:
    """What the `[plugins]` config section says; built by config.py, plain data here."""

    enabled: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    hook_timeout_seconds: float = 300.0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_env: str | None = field(default_factory=lambda: os.environ.get("BYGHEARTD_LOAD_PLUGINS"))


@dataclass(frozen=True)
class PluginInfo:
    """One discovered plugin, for `bygheartd plugins`: where it came from and whether it runs."""

    name: str
    source: str
    version: str | None
    hooks: tuple[str, ...]
    enabled: bool
    error: str | None = None
    # What the plugin says of itself (a module-level `note()`): the quality plugin says
    # whether tempo and key are measured (the `analysis` extra installed or not).
    note: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "hooks": list(self.hooks),
            "enabled": self.enabled,
            "error": self.error,
            "note": self.note,
        }


@dataclass(frozen=True)
class HookFailure:
    """A hook implementation that raised or overran its time limit; recorded on the job."""

    plugin: str
    hook: str
    error: str
    timed_out: bool = False

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed in {self.hook}: {self.error}"


@dataclass
class CompleteOutcome:
    """What `on_complete` hooks produced: files they added, failures, per-plugin sidecar data,
    and the warnings plugins reported about the song (a clipped take: the job still succeeds)."""

    added_files: list[Path] = field(default_factory=list)
    failures: list[HookFailure] = field(default_factory=list)
    sidecar: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _HookTimeout(Exception):
    """Our own time limit expired (as opposed to a TimeoutError raised by the plugin)."""


def _one_line(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A one-line description of an exception, with any known secret value masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _masked(text, secrets)[:500]


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _unknown_hooks(names: list[str]) -> str:
    """A misspelled hook name, with the nearest real one: pluggy would ignore it silently."""
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, HOOK_NAMES, n=1)
        parts.append(f"unknown hook {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return "; ".join(parts) + f"; the hooks are: {', '.join(HOOK_NAMES)}"


def _plugin_note(plugin: Any, secrets: Iterable[str]) -> str | None:
    """A plugin's `note()` (one line about itself), or None; a failing one says so."""
    note = getattr(plugin, "note", None)
    if not callable(note):
        return None
    try:
        text = note()
    except Exception as exc:
        return f"its note() failed: {_one_line(exc, secrets)}"
    return _masked(" ".join(str(text).split()), secrets)[:300] if text else None


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class PluginHost:
    """Loaded plugins plus the hook calls the engine makes; one per engine."""

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager("bygheartd")
        self.pm.add_hookspecs(hookspecs)
        self._infos: list[PluginInfo] = []
        self._order: list[str] = []
        self._configs: dict[str, dict[str, Any]] = {}
        self._secrets: list[str] = []

    @classmethod
    def load(cls, settings: PluginSettings) -> PluginHost:
        """Discover and register plugins; a bad plugin becomes an error entry, never a raise."""
        host = cls(settings)
        host._load_all()
        return host

    def describe(self) -> list[PluginInfo]:
        return list(self._infos)

    @property
    def active(self) -> list[str]:
        """Names of the registered plugins, in calling order."""
        return list(self._order)

    def _load_all(self) -> None:
        s = self.settings
        candidates = first_party_candidates() + entry_point_candidates()
        candidates += path_candidates(s.paths)
        wanted = _names(s.load_env) if s.load_env is not None else list(s.enabled)
        ordered = [c for name in wanted for c in candidates if c.name == name]
        ordered += sorted((c for c in candidates if c.name not in wanted), key=lambda c: c.name)
        known = {c.name for c in candidates}
        for name in wanted:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f": did you mean {close[0]!r}?" if close else ""
                error = f"no plugin named {name!r} is installed{hint}"
                logger.warning("plugin %s: %s", name, error)
                self._infos.append(PluginInfo(name, "unknown", None, (), False, error))
        seen: set[str] = set()
        for cand in ordered:
            if s.load_env is not None:
                on = cand.name in wanted
            elif cand.first_party:
                on = cand.name in s.enabled
            else:
                on = cand.name not in s.disabled
            if not on:
                self._infos.append(
                    PluginInfo(cand.name, cand.source, cand.version, (), False, None)
                )
                continue
            if cand.name in seen:
                error = f"another plugin named {cand.name!r} is already loaded"
                self._infos.append(
                    PluginInfo(cand.name, cand.source, cand.version, (), False, error)
                )
                continue
            seen.add(cand.name)
            self._infos.append(self._register(cand))

    def _register(self, cand: Candidate) -> PluginInfo:
        def failed(error: str) -> PluginInfo:
            logger.warning("plugin %s (%s) disabled: %s", cand.name, cand.source, error)
            return PluginInfo(cand.name, cand.source, cand.version, (), False, error)

        found: list[str] = []
        try:
            table = self.settings.tables.get(cand.name, {})
            config = resolve_secrets(table, where=f"plugins.{cand.name}", found=found)
        except SecretError as exc:
            return failed(str(exc))
        try:
            plugin = cand.load()
        except (Exception, SystemExit) as exc:
            return failed(f"failed to load: {_one_line(exc, found)}")
        try:
            self.pm.register(plugin, name=cand.name)
        except pluggy.PluginValidationError as exc:
            return failed(" ".join(str(exc).split()))  # pluggy's text spans lines
        except Exception as exc:
            return failed(f"failed to register: {_one_line(exc, found)}")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = [hc.name for hc in self.pm.get_hookcallers(plugin) or [] if hc.spec is None]
            self.pm.unregister(name=cand.name)
            return failed(_unknown_hooks(unknown) if unknown else " ".join(str(exc).split()))
        hooks = tuple(
            hc.name for hc in self.pm.get_hookcallers(plugin) or [] if hc.name in HOOK_NAMES
        )
        version = cand.version or getattr(plugin, "__version__", None)
        if not hooks:
            logger.info("plugin %s implements no bygheartd hook", cand.name)
        self._order.append(cand.name)
        self._configs[cand.name] = config
        self._secrets.extend(found)
        for secret in found:  # libraries log URLs and headers at debug: redact them there too
            if isinstance(secret, str):
                register_secret(secret)
        return PluginInfo(
            cand.name,
            cand.source,
            version,
            tuple(sorted(hooks)),
            True,
            None,
            _plugin_note(plugin, found),
        )

    # -- calling ----------------------------------------------------------------------------

    def _impls(self, hook: str) -> list[tuple[str, pluggy.HookImpl]]:
        caller = getattr(self.pm.hook, hook)
        impls = [i for i in caller.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
        by_plugin = {name: [i for i in impls if i.plugin_name == name] for name in self._order}
        ordered = [(name, i) for name in self._order for i in by_plugin[name]]
        # tryfirst/trylast still mean something between plugins; stable otherwise.
        return sorted(ordered, key=lambda p: 0 if p[1].tryfirst else 2 if p[1].trylast else 1)

    async def _call(self, name: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
        args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
        if "config" in impl.argnames:
            args["config"] = copy.deepcopy(self._configs.get(name, {}))
        timeout = self.settings.hook_timeout_seconds
        limit = timeout if timeout and timeout > 0 else None
        function = impl.function
        if inspect.iscoroutinefunction(function):
            awaitable: Any = function(**args)
        else:
            awaitable = _run_in_thread(function, args, f"bygheartd-plugin-{name}")
        try:
            async with asyncio.timeout(limit) as scope:
                result = await awaitable
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            if scope.expired():
                raise _HookTimeout from None
            raise
        return result

    async def _each(
        self, hook: str, kwargs: dict[str, Any]
    ) -> list[tuple[str, Any, HookFailure | None]]:
        out: list[tuple[str, Any, HookFailure | None]] = []
        for name, impl in self._impls(hook):
            out.append(await self._guarded(hook, name, impl, kwargs))
        return out

    async def _guarded(
        self, hook: str, name: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]
    ) -> tuple[str, Any, HookFailure | None]:
        try:
            return name, await self._call(name, impl, kwargs), None
        except _HookTimeout:
            limit = self.settings.hook_timeout_seconds
            failure = HookFailure(name, hook, f"timed out after {limit:g} s", True)
        except RejectJob as exc:
            if hook == "before_submit":
                # the reason lands in the store and failed/ notes: mask the plugin's secrets
                masked = _masked(exc.reason, self._secrets)
                if masked != exc.reason:
                    rejected = RejectJob(masked)
                    rejected.plugin = name
                    raise rejected from None
                exc.plugin = name
                raise
            failure = HookFailure(name, hook, _one_line(exc, self._secrets))
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled (shutdown): not the plugin's doing
            # The plugin's own cancelled task leaked out: a failure like any other.
            failure = HookFailure(name, hook, _one_line(exc, self._secrets))
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit or a BaseException of the plugin's own: the
            # daemon's shutdown comes from its signal handlers, never from inside a hook, so
            # this is the plugin failing like any other (and must not stop the daemon).
            failure = HookFailure(name, hook, _one_line(exc, self._secrets))
        logger.warning("%s", failure)
        return name, None, failure

    async def before_submit(self, job: Job, request: dict[str, Any]) -> dict[str, Any]:
        """Merged changes from every plugin, in order; raises RejectJob or PluginError."""
        current = copy.deepcopy(request)
        changes: dict[str, Any] = {}
        for name, impl in self._impls("before_submit"):
            kwargs = {"job": job, "request": copy.deepcopy(current)}
            _, result, failure = await self._guarded("before_submit", name, impl, kwargs)
            if failure is not None:
                raise PluginError(name, "before_submit", failure.error)
            if result is None:
                continue
            if not isinstance(result, Mapping):
                kind = type(result).__name__
                raise PluginError(name, "before_submit", f"returned {kind}, not a dict or None")
            for key, value in result.items():
                changes[str(key)] = value
                if value is None:
                    current.pop(str(key), None)
                else:
                    current[str(key)] = value
        return changes

    async def after_submit(self, job: Job, task_id: str) -> list[HookFailure]:
        return self._failures(await self._each("after_submit", {"job": job, "task_id": task_id}))

    async def on_done(self, job: Job, files: list[Path]) -> list[HookFailure]:
        return self._failures(await self._each("on_done", {"job": job, "files": list(files)}))

    async def on_failed(self, job: Job, reason: str) -> list[HookFailure]:
        return self._failures(await self._each("on_failed", {"job": job, "reason": reason}))

    async def on_held(self, job: Job, reason: str) -> list[HookFailure]:
        return self._failures(await self._each("on_held", {"job": job, "reason": reason}))

    async def on_retake(self, job: Job, reason: str) -> list[HookFailure]:
        return self._failures(await self._each("on_retake", {"job": job, "reason": reason}))

    async def on_album_complete(
        self, album: dict[str, Any], jobs: list[Job], files: list[Path]
    ) -> CompleteOutcome:
        """Every track of an album is done: plugins post-process the album whole."""
        outcome = CompleteOutcome()
        kwargs = {"album": dict(album), "jobs": list(jobs), "files": list(files)}
        for name, result, failure in await self._each("on_album_complete", kwargs):
            if failure is None and isinstance(result, Mapping) and "sidecar" in result:
                try:
                    json.dumps(result["sidecar"])
                except (TypeError, ValueError) as exc:
                    failure = HookFailure(name, "on_album_complete", f"sidecar data: {exc}")
                else:
                    outcome.sidecar[name] = result["sidecar"]
            if failure is not None:
                outcome.failures.append(failure)
        return outcome

    @staticmethod
    def _failures(results: list[tuple[str, Any, HookFailure | None]]) -> list[HookFailure]:
        return [failure for _, _, failure in results if failure is not None]

    async def on_complete(self, job: Job, files: list[Path]) -> CompleteOutcome:
        """Post-processing; later plugins see the files earlier ones added."""
        outcome = CompleteOutcome()
        current = [Path(f) for f in files]
        for name, impl in self._impls("on_complete"):
            kwargs = {"job": job, "files": list(current)}
            _, result, failure = await self._guarded("on_complete", name, impl, kwargs)
            if failure is None:
                try:
                    added, sidecar = _complete_result(result, current)
                    warnings = _complete_warnings(result)
                except ValueError as exc:
                    failure = HookFailure(name, "on_complete", str(exc))
            if failure is not None:
                outcome.failures.append(failure)
                continue
            current.extend(added)
            outcome.added_files.extend(added)
            if sidecar is not None:
                outcome.sidecar[name] = sidecar
            outcome.warnings.extend(_masked(w, self._secrets) for w in warnings)
        return outcome


def _complete_warnings(result: Any) -> list[str]:
    """The `warnings` an `on_complete` implementation returned: a list of strings."""
    if not isinstance(result, Mapping) or result.get("warnings") is None:
        return []
    warnings = result["warnings"]
    if isinstance(warnings, str) or not isinstance(warnings, Iterable):
        raise ValueError("returned warnings must be a list of strings")
    if not all(isinstance(w, str) for w in warnings):
        raise ValueError("returned warnings must be a list of strings")
    return [w.strip()[:500] for w in warnings if w.strip()]


def _complete_result(result: Any, files: list[Path]) -> tuple[list[Path], Any]:
    """Normalise what an `on_complete` implementation returned: (added files, sidecar)."""
    if result is None:
        return [], None
    sidecar = None
    paths: Any = result
    if isinstance(result, Mapping):
        unknown = set(result) - {"files", "sidecar", "warnings"}
        if unknown:
            raise ValueError(
                f"returned unknown keys {sorted(unknown)}: use 'files', 'sidecar', 'warnings'"
            )
        paths = result.get("files") or []
        sidecar = result.get("sidecar")
        try:
            json.dumps(sidecar)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sidecar data is not JSON-serialisable: {exc}") from None
    if isinstance(paths, str | os.PathLike) or not isinstance(paths, Iterable):
        raise ValueError("returned files must be a list of paths")
    base = files[0].parent if files else Path.cwd()
    added = []
    for item in paths:
        path = Path(item)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"returned a file that does not exist: {path}")
        if path not in files and path not in added:
            added.append(path)
    return added, sidecar


def _run_in_thread(function: Callable[..., Any], kwargs: dict[str, Any], name: str) -> Any:
    """Run a blocking implementation on a daemon thread and return a future for its result.

    Not asyncio.to_thread: a hung hook would then hold the default executor, and shutdown
    waits for it forever. A daemon thread that hangs is abandoned when we stop waiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = context.run(function, **kwargs)
        except StopIteration as exc:  # a future refuses it: it would never settle
            _notify(loop, settle, None, RuntimeError(f"StopIteration: {exc}"))
        except BaseException as exc:
            _notify(loop, settle, None, exc)
        else:
            _notify(loop, settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _notify(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[Any, BaseException | None], None],
    result: Any,
    error: BaseException | None,
) -> None:
    # RuntimeError: the loop closed while the hook ran, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, result, error)
