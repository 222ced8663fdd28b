"""The server pool's snapshot in the store's meta table, read without the pool itself.

`bygheartd status` runs in another process than the engine and starts fast: reading the
snapshot must not import the HTTP client the pool drives.
"""

from __future__ import annotations

import json
from typing import Any

from bygheartd.store.boundary import JobStore

SNAPSHOT_KEY = "server_pool"


async def read_snapshot(store: JobStore) -> dict[str, Any] | None:
    """What the engine last wrote about its servers (None: never written)."""
    raw = await store.get_meta(SNAPSHOT_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
