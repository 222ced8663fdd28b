"""First-party plugin `webhook`: POSTs a signed JSON summary when a job completes or fails
(or is held, or made again by a retake: events `held`, `retake`).

The body is signed with HMAC-SHA256 over `"<timestamp>.<body>"` so that a receiver can
check both the sender and the freshness; 5xx answers and connection errors are retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bygheartd import hookimpl
from bygheartd.jobs import Job

DEFAULTS: dict[str, Any] = {
    "url": "",
    "secret": "",
    # `retake` spends credits: announced unless a config leaves it out.
    "events": ["complete", "failed", "retake"],
    "attempts": 4,
    "backoff_seconds": 1.0,
    "timeout_seconds": 10.0,
}
EVENTS = ("complete", "failed", "held", "retake")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    if not settings["url"]:
        raise ValueError("set 'url' in [plugins.webhook]")
    bad = set(settings["events"]) - set(EVENTS)
    if bad:
        raise ValueError(f"unknown event(s) {sorted(bad)}; events: {', '.join(EVENTS)}")
    if int(settings["attempts"]) < 1:
        raise ValueError("attempts must be at least 1")
    return settings


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Bygheartd-Signature` value: `sha256=` + HMAC-SHA256 of `timestamp.body`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _where(url: str) -> str:
    """Scheme and host only: webhook URLs often carry a token in their path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def summary(event: str, job: Job, files: list[Path], reason: str | None) -> dict[str, Any]:
    record = job.as_record()
    if event == "complete":  # where plugins put copies (library paths, S3 keys), as recorded
        record["plugins"] = dict(job.result.get("postprocess") or {})
    if files:
        record["files"] = [
            {"path": str(f), "name": f.name, "size": f.stat().st_size if f.exists() else None}
            for f in files
        ]
    return {"event": event, "job": record, "reason": reason}


async def deliver(settings: dict[str, Any], event: str, payload: dict[str, Any]) -> int:
    """POST with retries on 5xx, 429 and connection errors; returns the final status."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    delivery = uuid.uuid4().hex
    attempts = int(settings["attempts"])
    delay = float(settings["backoff_seconds"])
    url, where = str(settings["url"]), _where(str(settings["url"]))
    problem = ""
    async with httpx.AsyncClient(timeout=float(settings["timeout_seconds"])) as client:
        for attempt in range(1, attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "bygheartd-webhook",
                "X-Bygheartd-Event": event,
                "X-Bygheartd-Timestamp": timestamp,
                "X-Bygheartd-Delivery": delivery,
            }
            if settings["secret"]:
                headers["X-Bygheartd-Signature"] = sign(str(settings["secret"]), timestamp, body)
            try:
                reply = await client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}"
            else:
                if reply.status_code < 300:
                    return reply.status_code
                if reply.status_code < 500 and reply.status_code != 429:
                    raise RuntimeError(f"webhook {where} answered {reply.status_code}")
                problem = f"HTTP {reply.status_code}"
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
    raise RuntimeError(f"webhook {where} failed after {attempts} attempt(s): {problem}")


async def _send(event: str, job: Job, files: list[Path], reason: str | None, config: Any) -> None:
    settings = _settings(config)
    if event in settings["events"]:
        await deliver(settings, event, summary(event, job, files, reason))


@hookimpl
async def on_done(job: Job, files: list[Path], config: dict[str, Any]) -> None:
    # Not on_complete: that runs before the sidecar, while the job is still `processing`
    # and other plugins may still change, move or add files.
    await _send("complete", job, files, None, config)


@hookimpl
async def on_failed(job: Job, reason: str, config: dict[str, Any]) -> None:
    await _send("failed", job, [], reason, config)


@hookimpl
async def on_held(job: Job, reason: str, config: dict[str, Any]) -> None:
    await _send("held", job, [], reason, config)


@hookimpl
async def on_retake(job: Job, reason: str, config: dict[str, Any]) -> None:
    # No take passed the quality gate: the song is made again, and that costs credits.
    await _send("retake", job, [], reason, config)
