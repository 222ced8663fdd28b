"""Finding the job rows whose JSON columns are not strict JSON.

Python's `json.dumps` writes a float that is not finite as the bare token `NaN` or
`Infinity`, which no JSON parser but Python's reads: SQLite's `json_extract` and
PostgreSQL's `::jsonb` fail the whole statement on such a row. Every writer now refuses
them (`columns.dumps`), but a store written by an older bygheartd (a server's `NaN` in a
poll reply) may still hold one; listings step around such rows, and `bygheartd store
check` names them with this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from bygheartd.catalog import counted

__all__ = [
    "JSON_COLUMNS_CHECKED",
    "PG_SUSPECTS",
    "is_strict",
    "not_strict_ids",
    "report_line",
]

JSON_COLUMNS_CHECKED = (
    "request_json",
    "api_body_json",
    "files_json",
    "warnings_json",
    "result_json",
)
_SHOWN = 20  # ids named in a report; the count says the rest

# SQLite finds them with `json_valid` (`backups.check`). PostgreSQL: the rows whose text
# holds a NaN or Infinity token at all (a lyric may say "Infinity" too), read again by
# `is_strict` to tell.
PG_SUSPECTS = (
    f"SELECT id, {', '.join(JSON_COLUMNS_CHECKED)} FROM jobs WHERE "
    + " OR ".join(f"{c} ~ '(NaN|Infinity)'" for c in JSON_COLUMNS_CHECKED)
    + " ORDER BY id"
)


class _NotStrict(ValueError):
    pass


def _refuse(_token: str) -> Any:
    raise _NotStrict


def is_strict(text: str | None) -> bool:
    """Whether `text` is JSON that SQLite and PostgreSQL read (no NaN or Infinity token)."""
    if text is None:
        return True
    try:
        json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):  # _NotStrict, or not JSON at all
        return False
    return True


def not_strict_ids(rows: Iterable[Sequence[Any]]) -> list[str]:
    """The ids of (id, column, column, ...) rows that hold a column that is not strict."""
    return [str(row[0]) for row in rows if not all(is_strict(v) for v in row[1:])]


def report_line(ids: Sequence[str], total: int) -> str:
    """What `store check` says of such rows: what they are, what it means, what to do."""
    shown = ", ".join(ids[:_SHOWN]) + (f" and {total - _SHOWN} more" if total > _SHOWN else "")
    return (
        f"{counted(total, 'job')} {'holds' if total == 1 else 'hold'} a number strict JSON "
        "has no place for (NaN or Infinity, written "
        f"by an older bygheartd from a server's reply): {shown}. Listings show them without "
        "their keeper; `bygheartd show JOB` still reads them, and nothing else is affected"
    )
