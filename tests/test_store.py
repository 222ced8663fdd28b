"""The job store: WAL, schema version, atomic transitions with history, id prefixes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bygheartd.jobs import JobStatus
from bygheartd.store.errors import JobNotFound, StaleTransition, StoreError
from bygheartd.store.store import SCHEMA_VERSION, Store


def new_job(store: Store, title: str = "Song") -> str:
    job = store.insert_job(
        title=title, model="bygheart-melody-fast", request={"title": title}, api_body={}, credits=1
    )
    return job.id


def test_database_is_wal_and_at_the_current_schema(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(tmp_path / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="upgrade bygheartd"):
        Store.open(tmp_path)


def test_transition_records_history_and_refuses_stale_moves(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    job_id = new_job(store)
    store.transition(job_id, JobStatus.CANCELLED, event="cancelled", reason="by user")
    with pytest.raises(StaleTransition):
        store.transition(
            job_id, JobStatus.SUBMITTING, event="submitting", expect={JobStatus.QUEUED}
        )
    events = store.history(job_id)
    assert [(e.event, e.from_status, e.to_status) for e in events] == [
        ("created", None, "queued"),
        ("cancelled", "queued", "cancelled"),
    ]


def test_a_transition_and_its_ledger_line_commit_together(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    job_id = new_job(store)
    entry = {
        "job_id": job_id,
        "model": "m",
        "credits": 2,
        "kind": "reserve",
        "day": "2026-11-24",
        "month": "2026-11",
    }
    store.transition(job_id, JobStatus.SUBMITTING, event="submitting", ledger=entry)
    assert store.job_credit_balance(job_id) == 2
    assert store.open_reservation(job_id) == (2, "2026-11-24", "2026-11")


def test_jobs_are_found_by_unique_prefix_of_six_or_more(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    job_id = new_job(store)
    assert store.find(job_id[:6].upper()).id == job_id
    with pytest.raises(JobNotFound, match="at least 6"):
        store.find(job_id[:5])
    with pytest.raises(JobNotFound, match="no job matches"):
        store.find("zzzzzzzz")


def test_ids_are_sortable_by_creation(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    ids = [new_job(store, f"s{i}") for i in range(5)]
    assert [j.id for j in store.list_jobs()] == sorted(ids, reverse=True)


def test_another_connection_commit_changes_the_data_version(tmp_path: Path) -> None:
    engine_side = Store.open(tmp_path)
    cli_side = Store.open(tmp_path)
    before = engine_side.data_version()
    new_job(cli_side)
    assert engine_side.data_version() != before
