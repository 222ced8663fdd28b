"""The store boundary: what every job store offers to async code, whatever is behind it.

The engine, the service and the faces hold a `JobStore` and await it; none of them holds a
database connection. SQLite (`store/threaded.py`, the default) runs its work on threads of
its own, so another process that holds the write lock delays that one write, never the
event loop; a PostgreSQL store (DESIGN.md "One store for several daemons") implements the
same methods. Every method raises only the errors in `store/errors.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, Protocol

from bygheartd.jobs import Event, Job, JobStatus
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
    ) -> tuple[list[Job], int]: ...

    async def list_oldest(self, status: JobStatus, limit: int) -> list[Job]: ...

    async def counts(self, engine: str | None = None) -> dict[str, int]: ...

    async def counts_by_server(self, statuses: Iterable[JobStatus]) -> dict[str, int]: ...

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
        **fields: Any,
    ) -> Job:
        """One move of `jobs.ALLOWED_MOVES`, its history line and ledger line, atomically.
        With `caps`, a ledger line that would pass a credit cap is refused (`OverBudget`)
        under one lock per account: daemons sharing the store never overspend together.
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
        """Changes whenever another process commits: the cheap cross-process wake-up."""
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

    async def register_engine(self, info: EngineInfo) -> None: ...

    async def renew_engine(self, engine_id: str, lease_until: datetime) -> bool:
        """False when the engine's row is gone (another engine took it for dead)."""
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
