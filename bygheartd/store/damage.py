"""A damaged store file becomes `StoreDamaged` wherever SQLite notices it.

SQLite only finds out that a page is garbage when a statement reads it: at the first
pragma for a file that is not a database at all, in the middle of a `fetchall` for a
damaged table. So the store's connection and its cursors turn those two errors, and
only those (not a lock, a constraint or a full disk), into one message that names the
file and the way back to a backup, instead of a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Self

from bygheartd.store.backups import damaged_error, is_damage, newest_backup


class GuardedConnection(sqlite3.Connection):
    """`sqlite3.connect(path, factory=GuardedConnection)`: damage errors name the store."""

    def __init__(self, database: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.store_path = Path(database)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor(GuardedCursor).execute(sql, parameters)


class GuardedCursor(sqlite3.Cursor):
    """Rows are read lazily, so a fetch can meet a damaged page as well as `execute`."""

    def _raise_damage(self, exc: sqlite3.DatabaseError) -> None:
        if is_damage(exc):
            connection = self.connection
            path = getattr(connection, "store_path", None) or Path("jobs.sqlite3")
            raise damaged_error(path, str(exc)) from None

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            self._raise_damage(exc)
            raise

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            self._raise_damage(exc)
            raise

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            self._raise_damage(exc)
            raise

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except sqlite3.DatabaseError as exc:
            self._raise_damage(exc)
            raise

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            self._raise_damage(exc)
            raise


def refuse_empty_store(path: Path) -> None:
    """A store file cut to 0 bytes is a valid empty database to SQLite: opening it would
    quietly start over with no jobs, and a week of daily backups of that would push every
    good one out. With backups beside it, it is damage (a new store is never left empty:
    the first statement writes its header)."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return
    if empty and newest_backup(path) is not None:
        raise damaged_error(path, "the file is empty (0 bytes)")
