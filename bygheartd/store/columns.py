"""What every job store writes the same way: the writable job fields, the JSON and time
columns, job ids, and how values become column text (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bygheartd.jobs import JobFile, JobResult, finite, iso, take_stems, utcnow

JSON_COLUMNS = {"request_json", "api_body_json", "files_json", "warnings_json", "result_json"}
TIME_COLUMNS = {"resumes_at", "unknown_since", "submitted_at", "completed_at", "progress_at"}
WRITABLE = {
    "title",
    "model",
    "task_id",
    "attempts",
    "reason",
    "resumes_at",
    "credits",
    "progress",
    "eta_seconds",
    "archived_as",
    "base_name",
    "files",
    "warnings",
    "result",
    "request",
    "api_body",
    "hold_kind",
    "unknown_since",
    "submitted_at",
    "completed_at",
    "source",
    "source_path",
    "server",
    "resubmits",
    "progress_at",
    "engine",
    "output",
}


@dataclass(frozen=True)
class CreditCaps:
    """What a reservation may not pass, for the ledger's `day` and `month` it is booked in;
    None: that period has no cap."""

    day: str
    month: str
    daily: int | None
    monthly: int | None

    def refusal(self, credits: int, spent_today: int, spent_month: int) -> str | None:
        if self.daily is not None and spent_today + credits > self.daily:
            return f"daily credit cap reached: {spent_today} of {self.daily} used today"
        if self.monthly is not None and spent_month + credits > self.monthly:
            return f"monthly credits used up: {spent_month} of {self.monthly} this month"
        return None


_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_job_id() -> str:
    """Short, time-sortable, URL-safe: 9 chars of milliseconds + 5 random chars."""
    ms = int(time.time() * 1000)
    head = ""
    for _ in range(9):
        head = _ID_ALPHABET[ms & 31] + head
        ms >>= 5
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))
    return head + tail


def dumps(value: Any) -> str:
    """A JSON column's text: strict JSON, a float that is not finite written as null (the
    JSON functions of SQLite and PostgreSQL refuse NaN, and one such row would break every
    listing that reads the column)."""
    plain = jsonable(value)
    try:  # the common case, in one pass: nothing to null
        return json.dumps(
            plain, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
    except ValueError:  # a NaN or an infinity somewhere (a plugin's figure): null it
        return json.dumps(
            finite(plain),
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, JobFile | JobResult):
        return value.stored()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def update_statement(job_id: str, mark: str, fields: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """`UPDATE jobs SET ...` for these job fields, with `mark` as the driver's placeholder
    (`?` for SQLite, `%s` for PostgreSQL): one mapping of fields to columns for both stores."""
    sets = [f"updated_at = {mark}"]
    args: list[Any] = [iso(utcnow())]
    for key, value in fields.items():
        if key == "status":
            column = key
        elif key in WRITABLE:
            column = f"{key}_json" if f"{key}_json" in JSON_COLUMNS else key
        else:
            raise ValueError(f"not a writable job field: {key}")
        if column in JSON_COLUMNS:
            value = dumps(jsonable(value))
        elif column in TIME_COLUMNS and isinstance(value, datetime):
            value = iso(value)
        sets.append(f"{column} = {mark}")
        args.append(value)
    args.append(job_id)
    return f"UPDATE jobs SET {', '.join(sets)} WHERE id = {mark}", args


def take_names(rows: Iterable[tuple[Any, Any]]) -> set[str]:
    """Every take name of (base_name, result_json) rows: the names unfinished deliveries
    hold (`jobs.take_stems`)."""
    stems: set[str] = set()
    for base, result in rows:
        takes = max(1, len(json.loads(result).get("outputs") or []))
        stems.update(take_stems(str(base), takes))
    return stems


def warning_like(prefix: str) -> str:
    """A LIKE pattern (escape character `\\`) for the raw `warnings_json` of a job with a
    warning that starts with `prefix`: the JSON text holds `"<prefix>` as `dumps` wrote it.
    It rules out most rows before any JSON is parsed; the exact test follows it (a quote
    escaped inside another warning could match the pattern too)."""
    raw = dumps(prefix)[:-1]  # the opening quote and the text, not the closing quote
    return "%" + raw.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
