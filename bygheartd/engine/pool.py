"""The server pool: several self-hosted ACE-Step servers driven as one.

ACE-Step runs one generation at a time per GPU, keeps its tasks in memory and answers a poll
only on the server that holds the task; so a load balancer in front of several servers breaks
polling. The pool pins each task to its server instead: a job records the URL it was
submitted to, and its polls and downloads go there. This module owns one client per server
(each with its own key), their health (down on a refused connection, a timeout or a 5xx;
probed again on a schedule), and the choice of server for the next submit.

Without `[[api.servers]]` the pool is the one configured server (`[api] base_url`), using
the engine's own client, so a single server and a pool follow the same code path.

The engine process is the only one that knows the live health of the servers; it writes a
small snapshot into the store's meta table (`server_pool`) so that `bygheartd status`, in
another process, shows it with its age. On a shared store one engine at a time writes it
(the `pool-snapshot` duty, `JobStore.lead`), so `status` shows one engine's view, not
whichever wrote last. In-flight and done counts are read from the jobs
rows themselves, never from the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bygheartd.api.client import BygheartClient
from bygheartd.api.errors import ApiError, RateLimited, TransientError
from bygheartd.api.factory import build_client
from bygheartd.api.inventory import parse_inventory
from bygheartd.api.results import finite_number
from bygheartd.config import Config, LiveConfig, ServerSection, find_server_key
from bygheartd.engine.lora import ensure_lora
from bygheartd.engine.pool_snapshot import SNAPSHOT_KEY
from bygheartd.errors import BygheartdError
from bygheartd.jobs import iso, utcnow
from bygheartd.safetext import visible
from bygheartd.songs.edits import family, needs_base_model
from bygheartd.store.boundary import JobStore

log = logging.getLogger(__name__)

# Healthy servers' /v1/stats (queue size, average job time) are read this often.
STATS_SECONDS = 30.0
# A server that has loaded no model yet (ACESTEP_NO_INIT) has its inventory read this
# often until it has (and at once after a song finished there).
PENDING_SECONDS = 5.0
# At most this often a snapshot is written for an unchanged health picture.
SNAPSHOT_SECONDS = 1.0
SNAPSHOT_DUTY = "pool-snapshot"


def down_reason(exc: BaseException) -> str | None:
    """Why an error means the server is down (no connection, a timeout, a 5xx); None when
    it answered (a 4xx, a rate limit, an unreadable reply): a server that answers is up."""
    if isinstance(exc, RateLimited):
        return None
    if isinstance(exc, TransientError):
        if exc.outcome_unknown:
            return None
        return str(exc)
    if isinstance(exc, ApiError) and exc.status is not None and exc.status >= 500:
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class ServerState:
    """One server as the engine sees it right now."""

    url: str
    max_in_flight: int
    healthy: bool = True
    reason: str | None = None
    down_since: float | None = None
    next_probe: float = 0.0
    probe_interval: float = 0.0
    checked_at: float | None = None
    stats_at: float = 0.0
    queue_size: int | None = None
    running: int | None = None
    server_avg_seconds: float | None = None
    # Generation seconds observed here (submit to result), a moving average.
    avg_seconds: float | None = None
    observed: int = 0
    # The DiT models loaded there (`/v1/model_inventory`, read with its stats); None: not
    # known yet, or the server has no inventory.
    loaded_models: tuple[str, ...] | None = None
    inventory_checked: bool = False
    # Its inventory lists nothing loaded (ACE-Step started with ACESTEP_NO_INIT, before its
    # first job): which models its slots hold is unknown, not "none" (`has_model`). Until
    # its first job has loaded them, one task that needs a model goes there at a time
    # (`probe_at`: when it was chosen), and its inventory is read again every
    # PENDING_SECONDS (`inventory_retry_at`), at once after a song finished there.
    models_pending: bool = False
    probe_at: float | None = None
    inventory_retry_at: float = 0.0
    # Its configured LoRA ([[api.servers]] lora_path, "" for none): whether the server lists
    # it (None: not known yet), a note while it waits, and when to look again meanwhile.
    lora_path: str = ""
    lora_loaded: bool | None = None
    lora_note: str | None = None
    lora_retry_at: float = 0.0
    # While its LoRA waits for the server's model: it took the one song that loads it.
    lora_first_taken: bool = False
    # Its polls failing without a break (epoch seconds, the last error), and until when a
    # 429 paused them: `status` says so instead of "healthy" (engine/polling.py).
    polls_failing_since: float | None = None
    poll_error: str | None = None
    polls_paused_until: float | None = None

    def expected_seconds(self) -> float | None:
        """How long a generation takes on this server: observed, else its own average."""
        return self.avg_seconds or self.server_avg_seconds or None

    def as_snapshot(self) -> dict[str, Any]:
        def at(ts: float | None) -> str | None:
            return None if ts is None else iso(_from_ts(ts))

        return {
            "url": self.url,
            "healthy": self.healthy,
            "reason": self.reason,
            "down_since": at(self.down_since),
            "checked_at": at(self.checked_at),
            "queue_size": self.queue_size,
            "running": self.running,
            "server_avg_seconds": self.server_avg_seconds,
            "avg_seconds": None if self.avg_seconds is None else round(self.avg_seconds, 2),
            "max_in_flight": self.max_in_flight,
            "loaded_models": None if self.loaded_models is None else list(self.loaded_models),
            "models_pending": self.models_pending,
            "lora_path": self.lora_path or None,
            "lora_loaded": self.lora_loaded,
            "lora_note": self.lora_note,
            "polls_failing_since": at(self.polls_failing_since),
            "poll_error": self.poll_error,
            "polls_paused_until": at(self.polls_paused_until),
        }


def _from_ts(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


@dataclass
class _Entry:
    section: ServerSection
    client: BygheartClient
    state: ServerState
    key_print: str | None = field(default=None, repr=False)
    # Why this server's own key cannot be read (then it gets no new songs), or None.
    key_problem: str | None = None

    def lora_changed(self, section: ServerSection) -> bool:
        return self.section.lora_path != section.lora_path


class ServerPool:
    """Every server of the configuration, its client and its health."""

    def __init__(
        self, live: LiveConfig, store: JobStore, default_client: Callable[[], BygheartClient]
    ) -> None:
        self.live = live
        self.store = store
        self._default_client = default_client
        self._entries: dict[str, _Entry] = {}
        self._single = ServerState(url="", max_in_flight=live.current.queue.max_in_flight)
        self._retired: list[BygheartClient] = []
        self._written_at = 0.0
        # A server went down or came back: the next write does not wait its turn.
        self._snapshot_now = False
        self._written: str | None = None
        # The engine this pool belongs to, named in the snapshot (several share a store).
        self.engine_id: str | None = None

    # -- shape --------------------------------------------------------------------------

    @property
    def pooled(self) -> bool:
        """True with `[[api.servers]]`: per-server limits, clients and health."""
        return bool(self.live.current.api.servers)

    def sync(self) -> None:
        """Follow the configuration (a reload may add or drop servers, or change a key):
        one client per configured server. A dropped server's client is kept until the
        engine stops, since its tasks in flight are still polled and downloaded there."""
        config = self.live.current
        for section in config.api.servers:
            self._sync_one(section)
        self._single.max_in_flight = config.queue.max_in_flight

    def _sync_one(self, section: ServerSection) -> bool:
        """One server's client, built again when its key changed; False when its key cannot
        be read: then that server alone is down (the others go on), with the fix as reason,
        and its key is read again at each health probe."""
        url = section.url
        entry = self._entries.get(url)
        try:
            key = find_server_key(self.live.current, section).value
        except BygheartdError as exc:
            reason = key_problem(section, exc)
            if entry is None:  # no key yet: a keyless client for tasks it already holds
                entry = _Entry(section, self._make_client(url, None), ServerState(url, 0))
                entry.key_print = "unreadable"
                self._entries[url] = entry
            entry.section = section
            entry.state.max_in_flight = section.max_in_flight
            if entry.key_problem != reason:
                entry.key_problem = reason
                self.mark_down(url, reason, until="its key file can be read")
            return False
        key_print = _fingerprint(key)
        if entry is not None and entry.lora_changed(section):
            entry.state.stats_at = 0.0  # a new lora_path (a reload): checked at the next tick
        if entry is not None and entry.key_print == key_print:
            entry.section = section
            entry.state.max_in_flight = section.max_in_flight
            entry.key_problem = None
            return True
        client = self._make_client(section.url, key)
        state = entry.state if entry is not None else ServerState(url, section.max_in_flight)
        state.max_in_flight = section.max_in_flight
        if entry is not None:
            self._retired.append(entry.client)
        self._entries[url] = _Entry(section, client, state, key_print)
        return True

    def _make_client(self, url: str, key: str | None) -> BygheartClient:
        return build_client(self.live.current.api, url, key, backend="acestep")

    def reset_clients(self) -> None:
        """A new key (a reload, a rewritten key file): new clients for the next requests."""
        for entry in self._entries.values():
            entry.key_print = "stale"
        try:
            self.sync()
        except BygheartdError as exc:
            log.warning("server pool: %s", exc)

    def states(self) -> list[ServerState]:
        """Configured servers in config order (a pool of one without `[[api.servers]]`)."""
        if not self.pooled:
            self._single.url = self._default_client().base_url
            return [self._single]
        configured = [s.url for s in self.live.current.api.servers]
        return [self._entries[u].state for u in configured if u in self._entries]

    def state(self, url: str | None) -> ServerState | None:
        if not self.pooled:
            return self.states()[0]
        entry = self._entries.get(url or "")
        return None if entry is None else entry.state

    def unreadable_key(self, url: str | None) -> str | None:
        """Why this server's own key cannot be read now (it gets no new songs), or None."""
        entry = self._entries.get(url or "") if self.pooled else None
        return None if entry is None else entry.key_problem

    def default_url(self) -> str:
        return self.states()[0].url if self.states() else self._default_client().base_url

    def client_for(self, url: str | None) -> BygheartClient:
        """The client of the server that holds a task (a take's URLs are relative to it)."""
        if not self.pooled:
            return self._default_client()
        if not url:
            return self._entries[self.live.current.api.servers[0].url].client
        entry = self._entries.get(url)
        if entry is None:  # dropped from the config while its task ran: finish it there
            section = ServerSection(url=url)
            try:
                key = find_server_key(self.live.current, section).value
            except BygheartdError as exc:  # the global key: polls say 401 until it is fixed
                log.warning("server %s: %s", url, exc)
                key = None
            entry = _Entry(section, self._make_client(url, key), ServerState(url, 0))
            self._entries[url] = entry
        return entry.client

    # -- dispatch -----------------------------------------------------------------------

    def choose(
        self, in_flight: Mapping[str, int], avoid: Iterable[str] = (), model: str | None = None
    ) -> str | None:
        """The healthy server with the most free room, then the shortest expected wait
        (its queue times its average job); a server that lost this job before comes last.
        With `model` (a task that needs that model: stems, layers), only servers that have
        it loaded, and after them one that has loaded nothing yet (`models_pending`): it
        takes one such task, whose run loads its slots, and the rest wait for its fresh
        inventory (it may hold no such model: then they would all run on slot 1). A server
        with a LoRA configured gets nothing before its LoRA was checked, and while the LoRA
        waits for the server's model, one song only (the one that loads the model; the LoRA
        is loaded as soon as it is done). None when every such healthy server is full (or
        none is healthy)."""
        shunned = set(avoid)
        best: tuple[tuple[bool, bool, int, float, int], str] | None = None
        for order, state in enumerate(self.states()):
            if not state.healthy or not has_model(state, model) or not self._lora_ready(state):
                continue
            unknown = model is not None and state.models_pending
            if unknown and state.probe_at is not None:
                continue  # its one task that finds out is there: the others wait for it
            mine = in_flight.get(state.url, 0)
            free = self._limit(state) - mine
            if free <= 0:
                continue
            queue = max(state.queue_size or 0, mine)
            wait = queue * (state.expected_seconds() or 1.0)
            rank = (unknown, state.url in shunned, -free, wait, order)
            if best is None or rank < best[0]:
                best = (rank, state.url)
        if best is None:
            return None
        chosen = self.state(best[1])
        if chosen is not None and self._lora_waiting(chosen):
            chosen.lora_first_taken = True
        if chosen is not None and best[0][0]:
            chosen.probe_at = time.time()
        return best[1]

    def not_sent(self, url: str, model: str | None) -> None:
        """The job `choose` picked this server for (with `model`) did not go there (a
        plugin, the budget or a full server stopped it): if it was the one to find out a
        lazily loading server's models, the next such job may go instead."""
        state = self.state(url)
        if state is not None and model is not None and state.models_pending:
            state.probe_at = None

    def _lora_waiting(self, state: ServerState) -> bool:
        """Its LoRA waits for the server to load its model (on its first job)."""
        return bool(state.lora_path) and state.lora_loaded is None and bool(state.lora_note)

    def _lora_ready(self, state: ServerState) -> bool:
        """No LoRA configured, or it is loaded, or it waits for the server's first job."""
        entry = self._entries.get(state.url) if self.pooled else None
        wanted = "" if entry is None else entry.section.lora_path
        if not wanted or self.live.current.backend != "acestep":
            return True
        return state.lora_path == wanted and (state.lora_loaded is True or bool(state.lora_note))

    def room(self, in_flight: Mapping[str, int]) -> int:
        """Free places on healthy servers: how many queued jobs may be submitted now."""
        return sum(
            max(0, self._limit(s) - in_flight.get(s.url, 0)) for s in self.states() if s.healthy
        )

    def full(self, in_flight: Mapping[str, int]) -> dict[str, int]:
        """The healthy servers without room, with their limit: where a queued song waits
        for a place (`JobStore.want_slot`); a down server's return wakes the submit anyway."""
        return {
            s.url: self._limit(s)
            for s in self.states()
            if s.healthy and in_flight.get(s.url, 0) >= self._limit(s)
        }

    def _limit(self, state: ServerState) -> int:
        """Its max_in_flight; one song (none once taken) while its LoRA waits (`choose`)."""
        if self._lora_waiting(state):
            return 0 if state.lora_first_taken else 1
        return state.max_in_flight

    # -- health -------------------------------------------------------------------------

    def mark_down(self, url: str | None, reason: str, *, until: str = "it answers") -> None:
        """No new submissions to this server until a probe finds it answering again."""
        state = self.state(url)
        if state is None or not self.pooled:
            return
        now = time.time()
        q = self.live.current.queue
        if state.healthy:
            state.healthy, state.down_since = False, now
            state.probe_interval = max(0.2, q.poll_min_seconds)
            log.warning(
                "server %s is down (%s): no new songs go there until %s", url, reason, until
            )
        else:
            state.probe_interval = min(q.poll_max_seconds, state.probe_interval * 1.5)
        state.reason = reason
        state.checked_at = now
        state.next_probe = now + state.probe_interval
        self._snapshot_now = True

    def mark_up(self, state: ServerState) -> None:
        if not state.healthy:
            down_for = time.time() - (state.down_since or time.time())
            log.info("server %s answers again after %.0f s: back in the pool", state.url, down_for)
        state.healthy, state.reason, state.down_since = True, None, None
        state.checked_at = time.time()
        self._snapshot_now = True

    def polls_failed(self, url: str | None, error: str, paused_until: float | None) -> None:
        """A poll of this server failed (`paused_until`: its 429 paused polling): `status`
        says since when and why until one answers again (`polls_answered`)."""
        state = self.state(url)
        if state is None:
            return
        if state.polls_failing_since is None:
            state.polls_failing_since = time.time()
        changed = (state.poll_error, state.polls_paused_until) != (error, paused_until)
        state.poll_error, state.polls_paused_until = error, paused_until
        self._snapshot_now = self._snapshot_now or changed

    def polls_answered(self, url: str | None) -> None:
        state = self.state(url)
        if state is None or state.polls_failing_since is None:
            return
        state.polls_failing_since = state.poll_error = state.polls_paused_until = None
        self._snapshot_now = True

    def polls_idle(self) -> None:
        """Nothing left to poll: no server's polls are failing any more."""
        for state in self.states():
            if state.polls_failing_since is not None:
                state.polls_failing_since = state.poll_error = state.polls_paused_until = None
                self._snapshot_now = True

    def _take_stats(self, state: ServerState, stats: Mapping[str, Any]) -> None:
        now = time.time()
        state.stats_at = state.checked_at = now
        size = stats.get("queue_size")
        if isinstance(size, int) and not isinstance(size, bool):
            state.queue_size = size
        jobs = stats.get("jobs")
        running = jobs.get("running") if isinstance(jobs, Mapping) else None
        countable = isinstance(running, int) and not isinstance(running, bool)
        state.running = running if countable else None
        average = finite_number(stats.get("avg_job_seconds"))
        if average is not None and average > 0:
            state.server_avg_seconds = average

    async def check(self, state: ServerState) -> bool:
        """Probe one server now: True when it answers (its stats are taken). A server whose
        key file could not be read has it read again first, and is not asked without it."""
        entry = self._entries.get(state.url) if self.pooled else None
        if entry is not None and entry.key_problem is not None:
            if not self._sync_one(entry.section):
                self.mark_down(state.url, entry.key_problem, until="its key file can be read")
                return False
            log.info("server %s: its key file can be read now", state.url)
        try:
            stats = await self.client_for(state.url).probe()
        except (ApiError, OSError) as exc:
            reason = down_reason(exc)
            if reason is None:  # it answered (a 4xx): up, just without usable stats
                self.mark_up(state)
                return True
            self.mark_down(state.url, reason)
            return False
        self._take_stats(state, stats)
        await self._take_inventory(state)
        problem = await self._take_lora(state)  # after the inventory: a fresh load, at once
        if problem is not None:
            self.mark_down(state.url, problem, until="it loads its LoRA")
            return False
        self.mark_up(state)
        return True

    async def _take_lora(self, state: ServerState) -> str | None:
        """Its configured LoRA, loaded when the server does not list it (`engine.lora`);
        the reason it must get no new jobs, or None."""
        entry = self._entries.get(state.url) if self.pooled else None
        before, state.lora_path = state.lora_path, "" if entry is None else entry.section.lora_path
        if not state.lora_path or self.live.current.backend != "acestep":
            state.lora_loaded = state.lora_note = None
            return None
        found = await ensure_lora(
            entry.client if entry else self.client_for(state.url),
            state.url,
            state.lora_path,
            # A new path (a reload) is not one the server forgot.
            was_loaded=state.lora_loaded if before == state.lora_path else None,
        )
        if found.note != state.lora_note and found.note:
            log.info("server %s: LoRA %s", state.url, found.note)
        state.lora_loaded, state.lora_note = found.loaded, found.note
        # While it waits for the server's model: looked at again as soon as a song finishes
        # there (`observe`), else with its stats. The one song it took may still run there;
        # when the server runs and queues nothing (that song never went), another may go.
        state.lora_retry_at = time.time() + STATS_SECONDS
        busy = bool(state.running or state.queue_size)
        state.lora_first_taken = state.lora_first_taken and busy and found.loaded is None
        return found.problem

    async def _take_inventory(self, state: ServerState) -> None:
        """Which models the server has loaded, read with its stats (ACE-Step only); whether
        it has loaded none yet (`models_pending`), and when that ends."""
        if self.live.current.backend != "acestep":
            return
        try:
            data = await self.client_for(state.url).model_inventory()
        except (ApiError, OSError) as exc:  # unknown: tasks go there as they always did
            log.debug("server %s: no model inventory: %s", state.url, exc)
            data = None
        inventory = None if data is None else parse_inventory(data)
        was_pending = state.models_pending
        state.loaded_models = None if inventory is None else tuple(inventory.loaded())
        state.models_pending = inventory is not None and inventory.pending()
        state.inventory_checked = True
        now = time.time()
        if not state.models_pending:
            state.probe_at = None
            if was_pending:
                loaded = ", ".join(visible(m) for m in state.loaded_models or ()) or "none"
                log.info("server %s has loaded its models now: %s", state.url, loaded)
            return
        state.inventory_retry_at = now + PENDING_SECONDS
        if not was_pending:
            log.info(
                "server %s has not loaded its models yet (an ACE-Step server started with "
                "ACESTEP_NO_INIT loads every configured slot on its first job): songs that "
                "need a particular model go there one at a time until it has",
                state.url,
            )
        # Its one task that finds out: still on its way or there, unless the server runs and
        # queues nothing a request timeout after it was chosen (it never went, or its run
        # failed before loading anything): then the next may go.
        grace = self.live.current.api.timeout_seconds
        idle = not (state.running or state.queue_size)
        if state.probe_at is not None and idle and now - state.probe_at >= grace:
            state.probe_at = None

    def missing_model(self, model: str | None) -> str | None:
        """Why no server can run a task that needs `model` (`no_server_has`), or None."""
        return no_server_has(model, self.states())

    async def fresh_stats(self, url: str | None) -> ServerState | None:
        """The server's counters read now (the evidence for a task it lost)."""
        state = self.state(url)
        if state is None:
            return None
        try:
            stats = await self.client_for(url).probe()
        except (ApiError, OSError) as exc:
            reason = down_reason(exc)
            if reason is not None:
                self.mark_down(url, reason)
            return None
        self._take_stats(state, stats)
        return state

    async def tend(self) -> None:
        """Probe down servers whose time has come; refresh healthy servers' stats; publish
        the pool's state (the hosted API's too: `status` reads it live, not from the last
        process)."""
        if self.live.current.backend != "acestep":
            await self.write_snapshot()
            return
        now = time.time()
        due = [
            s
            for s in self.states()
            if (not s.healthy and now >= s.next_probe)
            or (s.healthy and now - s.stats_at >= STATS_SECONDS)
            or (s.healthy and s.lora_path and s.lora_loaded is None and now >= s.lora_retry_at)
            or (s.healthy and s.models_pending and now >= s.inventory_retry_at)
        ]
        if due:
            await asyncio.gather(*(self.check(s) for s in due))
        await self.write_snapshot()

    def observe(self, url: str | None, seconds: float) -> None:
        """A generation on this server took `seconds` (submit to result)."""
        state = self.state(url)
        if state is None or seconds < 0:
            return
        state.observed += 1
        if state.lora_path and state.lora_loaded is None:  # its model is loaded now
            state.lora_retry_at = 0.0
        if state.models_pending:  # its first job loaded its slots: which, it says now
            state.inventory_retry_at = 0.0
        previous = state.avg_seconds
        state.avg_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self._written = None  # changed: the next tick writes it

    # -- the snapshot for other processes ------------------------------------------------

    async def write_snapshot(self, *, force: bool = False) -> None:
        """Publish the pool's state in the store (for `status` in other processes); at most
        every SNAPSHOT_SECONDS, at once after a server went down or came back."""
        force, self._snapshot_now = force or self._snapshot_now, False
        now = time.time()
        if not force and now - self._written_at < SNAPSHOT_SECONDS:
            return
        servers = [s.as_snapshot() for s in self.states()]
        text = json.dumps(servers, sort_keys=True)
        if not force and text == self._written and now - self._written_at < STATS_SECONDS:
            return  # unchanged: rewritten now and then, so its time says the engine lives
        self._written, self._written_at = text, now
        payload = {
            "updated_at": iso(utcnow()),
            "pid": _pid(),
            "engine": self.engine_id,
            "servers": servers,
        }
        try:
            if not await self.store.lead(SNAPSHOT_DUTY):
                # Another engine on the shared store publishes its view; asked again in a
                # second, and written at once when the duty comes here.
                self._written = None
                return
            await self.store.set_meta(SNAPSHOT_KEY, json.dumps(payload, sort_keys=True))
        except Exception as exc:
            log.debug("server pool snapshot not written: %s", exc)

    async def aclose(self) -> None:
        clients = [e.client for e in self._entries.values()] + self._retired
        self._entries.clear()
        self._retired.clear()
        for client in clients:
            await client.aclose()


def model_needed(request: Mapping[str, Any]) -> str | None:
    """The model a job must run on, for routing: stems, layers and accompaniment need
    their base-family model loaded (a server that lacks it silently runs slot 1, turbo)."""
    model = request.get("model")
    if not isinstance(model, str) or family(model) is None:  # not an ACE-Step model
        return None
    return model if needs_base_model(str(request.get("task_type"))) else None


def no_server_has(model: str | None, states: Iterable[ServerState]) -> str | None:
    """Why no server can run a task that needs `model`: every server's inventory is known
    and none has it loaded (a server not asked yet may have it, and so may one that has
    loaded nothing yet: ACE-Step with ACESTEP_NO_INIT loads every slot on its first job and
    lists none before, capture R1-3: None)."""
    if model is None:
        return None
    states = list(states)
    if any(has_model(s, model) or not s.inventory_checked for s in states):
        return None
    where = "; ".join(f"{s.url or 'the server'}: {', '.join(s.loaded_models or ()) or 'none'}"
                      for s in states)  # fmt: skip
    fix = (
        "load it on a server (ACESTEP_CONFIG_PATH2 or /v1/init), or set model to one that is loaded"
    )
    return f"no server has {model} loaded (loaded: {where}): {fix}"


def has_model(state: ServerState, model: str | None) -> bool:
    """Whether a task that needs `model` may go to this server: it has it loaded, or it has
    loaded nothing yet (`models_pending`: its slots are unknown until its first job; `choose`
    sends one such task there at a time). An inventory not read yet counts as no (the next
    health check reads it); a server without one (an older server, the hosted API) as yes:
    nothing better is known."""
    if model is None:
        return True
    if not state.inventory_checked:
        return False
    if state.loaded_models is None or model in state.loaded_models:
        return True
    return state.models_pending


def key_problem(section: ServerSection, exc: BaseException) -> str:
    """Why a server's key cannot be read, with what to do about it."""
    message = str(exc)
    if not section.api_key_file:  # the global key (its own message says what to do)
        return message
    path = Path(section.api_key_file).expanduser()
    if not path.is_file():  # the config's message names the fixes already
        return message
    return (
        f"[[api.servers]] {section.url}: api_key_file {str(path)!r} cannot be read ({message}): "
        f"make it readable by the daemon's user (chmod 600 {path}), or remove the key to use "
        "the global one"
    )


def unusable_pool(config: Config) -> str | None:
    """Why no server of the pool can be used at all (every key unreadable), else None:
    then starting the engine fails with every reason, as a single server's missing key
    file does, instead of running with nowhere to send songs."""
    if not config.api.servers:
        return None
    problems: list[str] = []
    for section in config.api.servers:
        try:
            find_server_key(config, section)
        except BygheartdError as exc:
            problems.append(key_problem(section, exc))
        else:
            return None
    return "no server of [[api.servers]] can be used: " + "; ".join(problems)


def _fingerprint(key: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest() if key else None


def _pid() -> int:
    import os

    return os.getpid()
