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
        from urllib.parse import unquote, urlsplit

        from bygheartd.logs import register_secret
        from bygheartd.store.postgres import PostgresJobStore

        try:
            password = urlsplit(config.store.url).password
        except ValueError:  # a malformed URL: the store says so when it is first used
            password = None
        if password:  # defence in depth: no log line may carry it, whatever says it
            register_secret(password)
            register_secret(unquote(password))

        return PostgresJobStore(config.store.url)
    from bygheartd.store.state_folder import prepare_state_folder
    from bygheartd.store.threaded import SqliteJobStore

    return SqliteJobStore.open(prepare_state_folder(config), inline=inline)
