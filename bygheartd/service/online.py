"""`bygheartd config check --online`: ask the configured backend whether it is there,
whether it takes the key, and what it offers, before a song finds out the hard way.

Nothing here spends anything: the key is tried with a poll for a task id that cannot exist
(`POST /query_result` is the one authenticated endpoint both backends have, and an unknown
id just answers "not found"); the API has no credits or plan endpoint to ask instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bygheartd.api.client import BygheartClient, RetryPolicy
from bygheartd.api.errors import ApiError, AuthError, PlanError, TransientError
from bygheartd.api.factory import make_client
from bygheartd.config import Config, find_api_key
from bygheartd.errors import BygheartdError
from bygheartd.safetext import visible

__all__ = ["PROBE_TASK_ID", "Finding", "check_backend"]

# Looks like no id either server hands out, so the poll can only ever answer "unknown".
PROBE_TASK_ID = "bygheartd-config-check"

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was looked at, how it went, in plain words."""

    topic: str
    level: Level
    text: str

    def line(self) -> str:
        """The finding on one line; what the server said in it is shown, never run (escape
        sequences in a /health reply or a model id come out as visible escapes)."""
        mark = {"ok": "", "warning": "warning: ", "error": "ERROR: "}[self.level]
        return visible(f"{self.topic}: {mark}{self.text}", one_line=True)


async def check_backend(config: Config) -> list[Finding]:
    """What the backend says about itself and the key. An `error` finding means songs
    cannot be made with this config as it is (exit 1); nothing is retried, so a wrong URL
    is reported at once instead of after the engine's backoff."""
    if config.api.servers:
        return await _check_pool(config)
    url = config.api.effective_base_url()
    try:
        client = make_client(config)
    except BygheartdError as exc:  # no key for the hosted API, a malformed base_url
        return [Finding("server", "error", f"not asked: {exc}")]
    return await _check_one(client, config, url)


async def _check_one(client: BygheartClient, config: Config, url: str) -> list[Finding]:
    client.retry = RetryPolicy(attempts=1)
    async with client:
        reached = await _try_key(client, config, url)
        if reached[0].level == "error":
            return reached
        return reached + await _health(client) + await _models(client, config)


async def _check_pool(config: Config) -> list[Finding]:
    """Every server of `[[api.servers]]`, at once, each with its own key; a server that is
    down is an error (songs still go to the others, but it should be looked at)."""
    import asyncio

    from bygheartd.api.factory import make_server_client

    async def one(index: int) -> list[Finding]:
        server = config.api.servers[index]
        try:
            client = make_server_client(config, server)
        except BygheartdError as exc:
            found = [Finding("server", "error", f"not asked: {exc}")]
        else:
            found = await _check_one(client, config, server.url)
        return [Finding(f"{server.url} {f.topic}", f.level, f.text) for f in found]

    parts = await asyncio.gather(*(one(i) for i in range(len(config.api.servers))))
    return [finding for part in parts for finding in part]


async def _try_key(client: BygheartClient, config: Config, url: str) -> list[Finding]:
    server = Finding("server", "ok", f"reachable at {url}")
    try:
        await client.query([PROBE_TASK_ID])
    except PlanError as exc:
        return [server, Finding("key", "error", f"refused for this plan: {exc}")]
    except AuthError as exc:
        where = "[api] api_key_file or BYGHEART_API_KEY"
        return [server, Finding("key", "error", f"refused: {exc}: check {where}")]
    except TransientError as exc:
        if exc.status is None:
            fix = "check [api] base_url and that the server is running"
            return [Finding("server", "error", f"cannot reach {url}: {exc}: {fix}")]
        return [Finding("server", "error", f"{url} is not answering properly: {exc}")]
    except ApiError as exc:
        hint = "is [api] base_url the API's address, and [api] backend the right kind?"
        return [Finding("server", "error", f"{url} answered with an error: {exc}: {hint}")]
    if client.backend == "acestep" and not _has_key(config):
        return [server, Finding("key", "ok", "none set, and the server answered without one")]
    return [server, Finding("key", "ok", "accepted")]


def _has_key(config: Config) -> bool:
    return find_api_key(config).value is not None


async def _health(client: BygheartClient) -> list[Finding]:
    try:
        data = await client.health()
    except ApiError as exc:
        return [Finding("health", "warning", f"GET /health failed: {exc}")]
    if data is None:
        return [Finding("health", "ok", "no /health endpoint (the hosted API may not have one)")]
    status = str(data.get("status", "?"))
    service = " ".join(str(data[k]) for k in ("service", "version") if data.get(k))
    text = f"{status}" + (f" ({service})" if service else "")
    if data.get("loaded_model"):
        text += f"; model {data['loaded_model']}"
    if data.get("models_initialized") is False:
        # Normal before the first job on ACE-Step: the models load then, once.
        text += " (not initialised yet: the first song loads it and takes longer)"
    return [Finding("health", "ok" if status == "ok" else "warning", text)]


async def _models(client: BygheartClient, config: Config) -> list[Finding]:
    try:
        names = await client.models()
    except ApiError as exc:
        return [Finding("models", "warning", f"GET /v1/models failed: {exc}")]
    if names is None:
        return [Finding("models", "ok", "no /v1/models endpoint to ask")]
    # "acestep/acestep-v15-turbo" -> "acestep-v15-turbo"; a name no server would use (a
    # page of text) is cut, so one reply cannot flood the report.
    short = [_cut(n.rsplit("/", 1)[-1]) for n in names]
    found = [Finding("models", "ok", ", ".join(short) or "none listed")]
    wanted = config.defaults.model
    if wanted and short and wanted not in short:
        found.append(
            Finding(
                "models",
                "warning",
                f"[defaults] model {wanted!r} is not among them, and songs that name no "
                'model use it: set it to one of these, or "" for the server\'s default',
            )
        )
    return found


def _cut(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
