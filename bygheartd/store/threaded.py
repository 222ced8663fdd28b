"""The SQLite job store behind the async boundary: one writer thread, reader threads.

As datasette's `execute_write_fn` does, every write goes to one thread with its own
connection and the caller awaits the result; reads run on their own threads and
connections (WAL: they never wait for a writer). Another process that holds the write
lock for seconds (`bygheartd submit`, a backup) makes that one write wait; the event loop,
the watcher, MCP over HTTP and the library page go on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bygheartd.jobs import Album, Event, Job, JobStatus
from bygheartd.store.albums import NewAlbum
from bygheartd.store.columns import CreditCaps
from bygheartd.store.engines import EngineInfo
from bygheartd.store.errors import StoreError
from bygheartd.store.events import JobEvent
from bygheartd.store.store import DB_NAME, Store

T = TypeVar("T")

READER_THREADS = 2


class SqliteJobStore:
    """`JobStore` on the SQLite file of one state folder (the default store)."""

    def __init__(self, path: Path, *, inline: bool = False) -> None:
        """`inline`: every call runs at once on the caller's thread (one connection, no
        threads, no event loop needed): for a one-shot command that nothing else shares
        the process with, such as `bygheartd list`, never for the daemon."""
        self.path = path
        self._inline = inline
        # Opened here (it migrates, and a damaged file says so at once, not at first use),
        # then only ever touched by the writer thread.
        self._writer_db = Store(path)
        self._local = threading.local()
        self._reader_dbs: list[Store] = []
        self._reader_lock = threading.Lock()
        self._closed = False
        if inline:
            self._watch_db = self._writer_db
            return
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="store-reader")
        # `PRAGMA data_version` is per connection: one connection of its own answers it,
        # so successive answers compare (a reader pool would mix two counters).
        self._watch_db = Store(path, migrate=False)

    @classmethod
    def open(cls, state_dir: Path, *, inline: bool = False) -> SqliteJobStore:
        return cls(state_dir / DB_NAME, inline=inline)

    @property
    def location(self) -> str:
        return str(self.path)

    # -- the two kinds of thread ------------------------------------------------------

    def _reader_db(self) -> Store:
        db: Store | None = getattr(self._local, "db", None)
        if db is None:
            db = Store(self.path, migrate=False)
            self._local.db = db
            with self._reader_lock:
                self._reader_dbs.append(db)
        return db

    async def _write(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise StoreError(f"the job store {self.path} is closed")
        if self._inline:
            return func(self._writer_db, *args, **kwargs)
        import asyncio  # here: an inline store (a cold `bygheartd list`) never needs it

        call = functools.partial(func, self._writer_db, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._writer, call)

    async def _read(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise StoreError(f"the job store {self.path} is closed")
        if self._inline:
            return func(self._writer_db, *args, **kwargs)
        import asyncio  # here: an inline store (a cold `bygheartd list`) never needs it

        def run() -> T:
            return func(self._reader_db(), *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def close(self) -> None:
        """Finish what was asked, then close every connection (each in its own thread)."""
        if self._closed:
            return
        self._closed = True
        if self._inline:
            self._writer_db.close()
            return
        import asyncio

        await asyncio.to_thread(self._shut_down)

    def close_sync(self) -> None:
        """For code that owns the store outside any event loop (a test, a CLI exit path)."""
        if not self._closed:
            self._closed = True
            if self._inline:
                self._writer_db.close()
            else:
                self._shut_down()

    def _shut_down(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._reader_lock:
            for db in self._reader_dbs:
                db.close()
            self._reader_dbs.clear()
        self._watch_db.close()
        self._writer_db.close()

    # -- jobs -------------------------------------------------------------------------

    async def insert_job(self, **fields: Any) -> Job:
        return await self._write(Store.insert_job, **fields)

    async def insert_album(self, album: NewAlbum) -> tuple[Album, list[Job]]:
        return await self._write(Store.insert_album, album)

    async def get_album(self, album_id: str) -> Album:
        return await self._read(Store.get_album, album_id)

    async def find_albums(self, ref: str) -> list[Album]:
        return await self._read(Store.find_albums, ref)

    async def list_albums(self, limit: int | None = None) -> list[Album]:
        return await self._read(Store.list_albums, limit)

    async def album_jobs(self, album_id: str) -> list[Job]:
        return await self._read(Store.album_jobs, album_id)

    async def get(self, job_id: str) -> Job:
        return await self._read(Store.get, job_id)

    async def find(self, ref: str) -> Job:
        return await self._read(Store.find, ref)

    async def find_by(self, column: str, value: str) -> list[Job]:
        return await self._read(Store.find_by, column, value)

    async def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        limit: int | None = None,
        *,
        summary: bool = False,
        engine: str | None = None,
    ) -> list[Job]:
        wanted = list(statuses) if statuses is not None else None
        return await self._read(Store.list_jobs, wanted, limit, summary=summary, engine=engine)

    async def search_jobs(
        self,
        text: str = "",
        statuses: Iterable[JobStatus] | None = None,
        *,
        limit: int,
        offset: int = 0,
        warning_prefix: str | None = None,
    ) -> tuple[list[Job], int]:
        wanted = list(statuses) if statuses is not None else None
        return await self._read(
            Store.search_jobs,
            text,
            wanted,
            limit=limit,
            offset=offset,
            warning_prefix=warning_prefix,
        )

    async def jobs_made_from(self, sources: Collection[str], after: str) -> list[Job]:
        return await self._read(Store.jobs_made_from, list(sources), after)

    async def list_oldest(self, status: JobStatus, limit: int) -> list[Job]:
        return await self._read(Store.list_oldest, status, limit)

    async def counts(self, engine: str | None = None) -> dict[str, int]:
        return await self._read(Store.counts, engine)

    async def claim_queued(self, engine_id: str, limit: int) -> list[Job]:
        return await self._write(Store.claim_queued, engine_id, limit)

    async def release_claims(self, engine_id: str, job_ids: Collection[str] | None = None) -> int:
        ids = None if job_ids is None else list(job_ids)
        return await self._write(Store.release_claims, engine_id, ids)

    async def lead(self, duty: str) -> bool:
        """One engine per SQLite store (its lock file): it holds every duty."""
        return not self._closed

    def on_work(self, wake: Callable[[str], None]) -> bool:
        """SQLite cannot push: the engine polls `data_version` instead."""
        return False

    async def register_engine(self, info: EngineInfo, lease_seconds: float | None = None) -> None:
        await self._write(Store.register_engine, info, lease_seconds)

    async def renew_engine(self, engine_id: str, lease_seconds: float) -> datetime | None:
        return await self._write(Store.renew_engine, engine_id, lease_seconds)

    async def retire_engine(self, engine_id: str) -> None:
        await self._write(Store.retire_engine, engine_id)

    async def list_engines(self) -> list[EngineInfo]:
        return await self._read(Store.list_engines)

    async def adopt_jobs(self, engine_id: str, *, everyone_else: bool = False) -> list[Job]:
        return await self._write(Store.adopt_jobs, engine_id, everyone_else=everyone_else)

    async def counts_by_server(self, statuses: Iterable[JobStatus]) -> dict[str, int]:
        return await self._read(Store.counts_by_server, list(statuses))

    async def want_slot(self, engine_id: str, limits: Mapping[str, int]) -> bool:
        """One engine per SQLite store: its own moves wake it, nobody else's; only whether
        a server has room by now."""
        in_flight = await self.counts_by_server([JobStatus.SUBMITTING, JobStatus.RUNNING])
        return any(in_flight.get(url, 0) < limit for url, limit in limits.items())

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
        return await self._write(
            Store.transition,
            job_id,
            to,
            event=event,
            reason=reason,
            expect=None if expect is None else frozenset(expect),
            ledger=ledger,
            before_commit=before_commit,
            caps=caps,
            server_limit=server_limit,
            **fields,
        )

    async def update(
        self,
        job_id: str,
        *,
        event: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> Job:
        wanted = None if expect is None else frozenset(expect)
        return await self._write(Store.update, job_id, event=event, expect=wanted, **fields)

    async def add_event(self, job_id: str, event: str, reason: str | None = None) -> None:
        await self._write(Store.add_event, job_id, event, reason)

    async def history(self, job_id: str) -> list[Event]:
        return await self._read(Store.history, job_id)

    async def events_after(
        self, seq: int, job_ids: Collection[str] | None = None, *, limit: int = 500
    ) -> list[JobEvent]:
        ids = None if job_ids is None else list(job_ids)
        return await self._read(Store.events_after, seq, ids, limit=limit)

    async def event_seq(self, back: int = 0) -> int:
        return await self._read(Store.event_seq, back)

    async def data_version(self) -> int:
        # Not the writer's connection: a writer waiting for a lock must not hold this up.
        # Our own commits count too, which costs one extra wake-up at most.
        watch = self._watch_db
        return await self._read(lambda _db: watch.data_version())

    async def recent_generations(
        self, limit: int = 200
    ) -> list[tuple[str | None, float | None, float]]:
        return await self._read(Store.recent_generations, limit)

    async def claim_base_name(self, job_id: str, base: str, takes: int, output: str) -> bool:
        return await self._write(Store.claim_base_name, job_id, base, takes, output)

    async def reserved_take_stems(self) -> set[str]:
        return await self._read(Store.reserved_take_stems)

    async def api_body(self, job_id: str) -> dict[str, Any]:
        return await self._read(Store.api_body, job_id)

    async def source_path(self, job_id: str) -> str | None:
        return await self._read(Store.source_path, job_id)

    async def checkpoint(self) -> None:
        await self._write(Store.checkpoint)

    # -- the credit ledger ------------------------------------------------------------

    async def record_credits(
        self,
        *,
        job_id: str | None,
        model: str | None,
        credits: int,
        kind: str,
        day: str,
        month: str,
    ) -> None:
        await self._write(
            Store.record_credits,
            job_id=job_id,
            model=model,
            credits=credits,
            kind=kind,
            day=day,
            month=month,
        )

    async def open_reservation(self, job_id: str) -> tuple[int, str, str] | None:
        return await self._read(Store.open_reservation, job_id)

    async def credits_spent(self, *, day: str | None = None, month: str | None = None) -> int:
        return await self._read(Store.credits_spent, day=day, month=month)

    async def credits_of_kinds(self, kinds: Collection[str], *, day: str) -> int:
        return await self._read(Store.credits_of_kinds, list(kinds), day=day)

    async def credits_by_model(self, month: str) -> dict[str, int]:
        return await self._read(Store.credits_by_model, month)

    async def credits_by_day(self, since_day: str) -> dict[str, int]:
        return await self._read(Store.credits_by_day, since_day)

    async def first_ledger_month(self) -> str | None:
        return await self._read(Store.first_ledger_month)

    async def job_credit_balance(self, job_id: str) -> int:
        return await self._read(Store.job_credit_balance, job_id)

    async def credit_balances(self, job_ids: list[str]) -> dict[str, int]:
        return await self._read(Store.credit_balances, list(job_ids))

    # -- named values -----------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        return await self._read(Store.get_meta, key)

    async def set_meta(self, key: str, value: str | None) -> None:
        await self._write(Store.set_meta, key, value)

    async def take_meta(self, key: str) -> str | None:
        return await self._write(Store.take_meta, key)

    async def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        return await self._read(Store.meta_with_prefix, prefix)
