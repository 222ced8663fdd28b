"""The store boundary: async code awaits the store, SQLite works on threads of its own, and
only our errors come out, so another process holding the write lock delays that one write
and never the event loop (bench/store_lock.py measures it from outside)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bygheartd.jobs import JobStatus
from bygheartd.store.errors import DropTaken, KeyTaken, StoreError
from bygheartd.store.threaded import SqliteJobStore

pytestmark = pytest.mark.anyio

# Another process (a `bygheartd submit`, a backup) holding the store's write lock until told.
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
print("released", flush=True)
"""


async def _insert(store: SqliteJobStore, **keys: str) -> str:
    job = await store.insert_job(title="t", model=None, request={}, api_body={}, credits=0, **keys)
    return job.id


async def test_reads_and_the_loop_go_on_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = await _insert(store)
        assert holder.stdout is not None and holder.stdin is not None
        assert await anyio.to_thread.run_sync(holder.stdout.readline) == "locked\n"
        write_done = anyio.Event()

        async def write() -> None:
            await store.update(job_id, title="renamed while locked")
            write_done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(write)
            ticks = reads = 0
            while reads < 20:  # the loop turns and reads are answered meanwhile
                assert (await store.get(job_id)).title == "t"
                reads += 1
                await anyio.sleep(0.01)
                ticks += 1
            assert not write_done.is_set()  # the write waits for the lock, alone
            holder.stdin.write("go\n")
            holder.stdin.flush()
            with anyio.fail_after(10):
                await write_done.wait()
        assert (ticks, reads) == (20, 20)
        assert (await store.get(job_id)).title == "renamed while locked"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()  # waits, and closes its pipes
        await store.close()


async def test_a_second_insert_of_a_key_or_a_drop_is_our_error_not_sqlites(
    tmp_path: Path,
) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    try:
        await _insert(store, idempotency_key="k1", drop_identity="d1")
        with pytest.raises(KeyTaken, match="k1"):
            await _insert(store, idempotency_key="k1")
        with pytest.raises(DropTaken):
            await _insert(store, drop_identity="d1")
        assert (await store.counts()) == {"queued": 1}
    finally:
        await store.close()


async def test_another_process_commit_changes_the_data_version(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    mine, theirs = SqliteJobStore(path), SqliteJobStore(path)
    try:
        before = await mine.data_version()
        assert await mine.data_version() == before  # stable while nothing is committed
        job_id = await _insert(theirs)
        assert await mine.data_version() != before
        moved = await mine.transition(job_id, JobStatus.CANCELLED, event="cancelled")
        assert (await theirs.get(job_id)).status is moved.status  # read after the write
    finally:
        await mine.close()
        await theirs.close()


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.counts()
    await store.close()  # twice is fine
