"""Which store a config names, opened behind the boundary (`JobStore`).

Today that is SQLite in the state folder; `[store] url` will name a shared PostgreSQL
store here too. Light to import: a cold `bygheartd list` opens the store through it.
"""

from __future__ import annotations

from bygheartd.config import Config
from bygheartd.store.boundary import JobStore


def open_store(config: Config, *, inline: bool = False) -> JobStore:
    """The job store `config` names: PostgreSQL for `[store] url` (connected at first use),
    else SQLite in its state folder (`inline`: answered on the caller's thread, for a
    one-shot command; see `SqliteJobStore`)."""
    if config.store.url:
        from bygheartd.store.postgres import PostgresJobStore

        return PostgresJobStore(config.store.url)
    from bygheartd.store.threaded import SqliteJobStore

    return SqliteJobStore.open(config.state_dir, inline=inline)
