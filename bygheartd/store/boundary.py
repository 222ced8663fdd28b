"""The store boundary: what every job store offers to async code, whatever is behind it.

The engine, the service and the faces hold a `JobStore` and await it; none of them holds a
database connection. SQLite (`store/threaded.py`, the default) runs its work on threads of
its own, so another process that holds the write lock delays that one write, never the
event loop; a PostgreSQL store (DESIGN.md "One store for several daemons") implements the
same methods. Every method raises only the errors in `store/errors.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from bygheartd.jobs import Album, Event, Job, JobStatus
from bygheartd.store.albums import NewAlbum
from bygheartd.store.columns import CreditCaps
from bygheartd.store.engines import EngineInfo
from bygheartd.store.events import JobEvent


class JobStore(Protocol):
    """Jobs, their history, the credit ledger and a few named values (meta)."""

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a path, or a URL without its password)."""
        ...

    async def close(self) -> None: ...

    # -- jobs ---------------------------------------------------------------------------

    async def insert_job(
        self,
        *,
        title: str,
        model: str | None,
        request: dict[str, Any],
        api_body: dict[str, Any],
        credits: int,
        source: str | None = None,
        source_path: str | None = None,
        origin: str = "cli",
        drop_identity: str | None = None,
        content_sha256: str | None = None,
        dedupe_key: str | None = None,
        idempotency_key: str | None = None,
        archived_as: str | None = None,
        output: str | None = None,
    ) -> Job:
        """A new `queued` job; `KeyTaken` / `DropTaken` when another process just stored
        the same idempotency key or drop."""
        ...

    # -- albums (store/albums.py) ---------------------------------------------------------

    async def insert_album(self, album: NewAlbum) -> tuple[Album, list[Job]]:
        """The album and a queued job per track, in one transaction: whole or not at all;
        its folder is the first free of its slug, slug-2, ... (not held by another album,
        not in `album.taken`)."""
        ...

    async def get_album(self, album_id: str) -> Album:
        """`JobNotFound` when there is no such album."""
        ...

    async def find_albums(self, ref: str) -> list[Album]:
        """By id prefix (6+ characters) or exact title (any case), newest first."""
        ...

    async def list_albums(self, limit: int | None = None) -> list[Album]:
        """Newest first."""
        ...

    async def album_jobs(self, album_id: str) -> list[Job]:
        """The album's tracks, in track order."""
        ...

    async def get(self, job_id: str) -> Job: ...

    async def find(self, ref: str) -> Job:
        """By id or a unique prefix of at least 6 characters."""
        ...

    async def find_by(self, column: str, value: str) -> list[Job]: ...

    async def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        limit: int | None = None,
        *,
        summary: bool = False,
        engine: str | None = None,
    ) -> list[Job]:
        """Newest first; `engine` keeps the jobs that engine holds."""
        ...

    async def search_jobs(
        self,
        text: str = "",
        statuses: Iterable[JobStatus] | None = None,
        *,
        limit: int,
        offset: int = 0,
        warning_prefix: str | None = None,
    ) -> tuple[list[Job], int]:
        """Newest first, with how many match; `text` in the title, style or lyrics
        (case-insensitive); `warning_prefix` keeps jobs with a warning starting with it."""
        ...

    async def jobs_made_from(self, sources: Collection[str], after: str) -> list[Job]:
        """The jobs newer than job `after` whose `source` is one of the files `sources`,
        oldest first: what was made from a finished song's takes (its stems, an extended
        song). Ids sort by time, so only jobs from `after` on are read."""
        ...

    async def list_oldest(self, status: JobStatus, limit: int) -> list[Job]: ...

    async def counts(self, engine: str | None = None) -> dict[str, int]: ...

    async def counts_by_server(self, statuses: Iterable[JobStatus]) -> dict[str, int]: ...

    async def want_slot(self, engine_id: str, limits: Mapping[str, int]) -> bool:
        """This engine has queued songs and every server in `limits` (URL: its
        `max_in_flight`) is full: True when one has room by now (look again at once).
        Else, on a store shared by several engines, the next move of another engine's song
        off one of these servers (out of `submitting` or `running`) wakes this one
        (`on_work`: `slot`), and only such a move while someone waits notifies. Alone on its
        store (SQLite), an engine learns of its own moves in-process: nothing is written."""
        ...

    async def claim_queued(self, engine_id: str, limit: int) -> list[Job]:
        """Up to `limit` of the oldest queued jobs, oldest first, marked as this engine's
        (`engine`) in the statement that takes them: those of no engine, its own, and those
        whose engine's lease ran out. On PostgreSQL rows being claimed elsewhere are skipped
        (`FOR UPDATE SKIP LOCKED`): two engines never get one job, neither waits. The job
        stays `queued` until the engine's `submitting` move."""
        ...

    async def release_claims(self, engine_id: str, job_ids: Collection[str] | None = None) -> int:
        """Give back queued jobs this engine claimed and will not submit now (all of them
        without `job_ids`), for any engine to claim; how many."""
        ...

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        event: str,
        reason: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        ledger: dict[str, Any] | None = None,
        before_commit: Callable[[Job, list[Event]], None] | None = None,
        caps: CreditCaps | None = None,
        server_limit: int | None = None,
        **fields: Any,
    ) -> Job:
        """One move of `jobs.ALLOWED_MOVES`, its history line and ledger line, atomically.
        With `caps`, a ledger line that would pass a credit cap is refused (`OverBudget`)
        under one lock per account: daemons sharing the store never overspend together.
        With `server_limit`, a move that would put more than that many songs in flight on
        `fields["server"]` is refused (`ServerFull`) under one lock per server.
        Only the lifecycle (`engine/lifecycle.py`) and the engine's stages call this."""
        ...

    async def update(
        self,
        job_id: str,
        *,
        event: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> Job: ...

    async def add_event(self, job_id: str, event: str, reason: str | None = None) -> None: ...

    async def history(self, job_id: str) -> list[Event]: ...

    async def events_after(
        self, seq: int, job_ids: Collection[str] | None = None, *, limit: int = 500
    ) -> list[JobEvent]: ...

    async def event_seq(self, back: int = 0) -> int: ...

    async def data_version(self) -> int:
        """Changes whenever another process commits (at least: a job and its history):
        what `follow` polls, and the engine on a store that cannot push (`on_work`)."""
        ...

    def on_work(self, wake: Callable[[str], None]) -> bool:
        """Call `wake(kind)` on the event loop when any process commits work an engine must
        act on (`queued`: a new or requeued job, claims given back; `cancelled`; `engines`:
        an engine left; `slot`: a place on a pool server this engine waits for
        (`want_slot`) was freed; `reconnected`: anything may have changed). True when the store
        pushes these (PostgreSQL's LISTEN); False when the caller must poll `data_version`."""
        ...

    async def lead(self, duty: str) -> bool:
        """True while this process holds `duty` (the daily release, the pool snapshot):
        one process at a time on the store, until it stops or loses the database."""
        ...

    async def recent_generations(
        self, limit: int = 200
    ) -> list[tuple[str | None, float | None, float]]: ...

    async def reserved_take_stems(self) -> set[str]: ...

    async def claim_base_name(self, job_id: str, base: str, takes: int, output: str) -> bool:
        """Give a `downloading` job its output base and folder unless an unfinished delivery
        holds one of its take names (False: choose again): claimed in the store, so hosts
        sharing one output folder never pick the same name."""
        ...

    async def api_body(self, job_id: str) -> dict[str, Any]: ...

    async def source_path(self, job_id: str) -> str | None: ...

    async def checkpoint(self) -> None: ...

    # -- engines and their leases (store/engines.py) -----------------------------------------

    async def register_engine(self, info: EngineInfo, lease_seconds: float | None = None) -> None:
        """With a lease of `lease_seconds` (else as long as `info`'s), measured with the
        store's clock (the database's on PostgreSQL, never the hosts')."""
        ...

    async def renew_engine(self, engine_id: str, lease_seconds: float) -> datetime | None:
        """The lease's new end (the store's clock); None when the engine's row is gone
        (another engine took it for dead)."""
        ...

    async def retire_engine(self, engine_id: str) -> None: ...

    async def list_engines(self) -> list[EngineInfo]: ...

    async def adopt_jobs(self, engine_id: str, *, everyone_else: bool = False) -> list[Job]:
        """Take over the jobs of engines whose lease ran out (with `everyone_else`, of every
        other engine) and jobs that no engine holds; two engines never adopt one job."""
        ...

    # -- the credit ledger ----------------------------------------------------------------

    async def record_credits(
        self,
        *,
        job_id: str | None,
        model: str | None,
        credits: int,
        kind: str,
        day: str,
        month: str,
    ) -> None: ...

    async def open_reservation(self, job_id: str) -> tuple[int, str, str] | None: ...

    async def credits_spent(self, *, day: str | None = None, month: str | None = None) -> int: ...

    async def credits_of_kinds(self, kinds: Collection[str], *, day: str) -> int:
        """Credits of a day's ledger lines of these kinds (what retakes spent that day)."""
        ...

    async def credits_by_model(self, month: str) -> dict[str, int]: ...

    async def credits_by_day(self, since_day: str) -> dict[str, int]: ...

    async def first_ledger_month(self) -> str | None: ...

    async def job_credit_balance(self, job_id: str) -> int: ...

    async def credit_balances(self, job_ids: list[str]) -> dict[str, int]: ...

    # -- named values -----------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str | None) -> None: ...

    async def take_meta(self, key: str) -> str | None: ...

    async def meta_with_prefix(self, prefix: str) -> dict[str, str]: ...
