"""What `status` says about each server: health, in flight, done, average, queue.

The CLI runs in another process than the engine, so it cannot ask the pool. It reads two
honest sources instead: the jobs rows (in flight and done per server: the truth, whatever
runs) and the small snapshot the engine writes into the store's meta table while it runs
(health and why, the server's queue size, average generation seconds). The snapshot carries
its time, the engine's pid and id; it is live when this state folder's engine wrote it, or
(on a shared store) an engine whose lease is current did, wherever it runs; otherwise the
health shown is marked as last known.
"""

from __future__ import annotations

from typing import Any

from bygheartd.config import Config
from bygheartd.engine.pool_snapshot import read_snapshot
from bygheartd.jobs import JobStatus, utcnow
from bygheartd.safetext import visible
from bygheartd.store.boundary import JobStore


async def server_report(
    config: Config, store: JobStore, holder: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One record per configured server (the one `base_url` without a pool)."""
    loras = {s.url: s.lora_path for s in config.api.servers}
    if config.api.servers:
        servers = [(s.url, s.max_in_flight) for s in config.api.servers]
    else:
        servers = [(config.api.effective_base_url(), config.queue.max_in_flight)]
    in_flight = await store.counts_by_server([JobStatus.SUBMITTING, JobStatus.RUNNING])
    done = await store.counts_by_server([JobStatus.DONE])
    snapshot = await read_snapshot(store) or {}
    seen = {str(s.get("url")): s for s in snapshot.get("servers") or () if isinstance(s, dict)}
    live = holder is not None and holder.get("pid") == snapshot.get("pid")
    if not live and snapshot.get("engine"):
        # On a shared store the snapshot is written by whichever engine holds that duty,
        # maybe on another host: live while that engine's lease is.
        now = utcnow()
        live = any(
            e.id == snapshot["engine"] and e.lease_until > now for e in await store.list_engines()
        )
    records = []
    for url, limit in servers:
        known = seen.get(url, {})
        healthy = known.get("healthy") if known else None
        records.append(
            {
                "url": url,
                "healthy": healthy,
                "reason": known.get("reason"),
                "live": bool(live and known),
                "checked_at": known.get("checked_at"),
                "in_flight": in_flight.get(url, 0),
                "max_in_flight": limit,
                "done": done.get(url, 0),
                "avg_seconds": known.get("avg_seconds") or known.get("server_avg_seconds"),
                "queue_size": known.get("queue_size"),
                "as_of": snapshot.get("updated_at") if known else None,
                "lora": _lora_record(loras.get(url, ""), known),
                # An ACE-Step server started with ACESTEP_NO_INIT, before its first job.
                "models_pending": known.get("models_pending") is True,
                # Its polls failing without a break (since, the last error), and until
                # when a 429 paused them: then it is not called healthy.
                "polls_failing_since": known.get("polls_failing_since"),
                "poll_error": known.get("poll_error"),
                "polls_paused_until": known.get("polls_paused_until"),
            }
        )
    return records


def _lora_record(path: str, known: dict[str, Any]) -> dict[str, Any] | None:
    """The server's configured LoRA and what the engine last found (None: none set)."""
    if not path:
        return None
    same = known.get("lora_path") == path
    return {
        "path": path,
        "loaded": known.get("lora_loaded") if same else None,
        "note": known.get("lora_note") if same else None,
    }


def lora_words(lora: dict[str, Any] | None) -> str:
    """`LoRA <path> loaded` and the like, for status and models."""
    if not lora:
        return ""
    if lora["loaded"] is True:
        state = "loaded"
    elif lora["loaded"] is False:
        state = "NOT loaded"
    else:
        state = lora.get("note") or "not checked yet"
    return f"LoRA {lora['path']} {state}"


def server_line(record: dict[str, Any]) -> str:
    """One line of `bygheartd status` for a server."""
    if record["healthy"] is None:
        health = "not checked yet" if record["live"] else "health unknown (no engine running)"
    elif record["healthy"] and record.get("poll_error"):
        health = f"polls failing since {record.get('polls_failing_since')}: " + visible(
            str(record["poll_error"]), one_line=True
        )
        if record.get("polls_paused_until"):
            health += f"; polling paused until {record['polls_paused_until']}"
    elif record["healthy"]:
        health = "healthy"
    else:
        health = f"DOWN: {record['reason'] or 'no answer'}"
    if record["healthy"] is not None and not record["live"]:
        health += f" (last known, {record['as_of']})"
    avg = f"{record['avg_seconds']:.1f} s" if record["avg_seconds"] else "-"
    queue = "-" if record["queue_size"] is None else str(record["queue_size"])
    lora = lora_words(record.get("lora"))
    pending = "; models not loaded yet (it loads them on its first job)"
    return (
        f"  {record['url']}: {health}; in flight {record['in_flight']}/"
        f"{record['max_in_flight']}, done {record['done']}, average {avg}, queue {queue}"
        + (pending if record.get("models_pending") else "")
        + (f"; {lora}" if lora else "")
    )
