"""One idempotency key is one request: at the service, the same key with the same request
returns the key's job, and with another request it is an error naming the key and the job
(so that no face tells its caller a new request was queued when it was not)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import MakeConfig

from bygheartd.jobs import Origin
from bygheartd.runtime import open_service
from bygheartd.service.errors import IdempotencyConflict, ServiceError
from bygheartd.service.service import SongService
from bygheartd.service.submission import Enqueued, Submission
from bygheartd.songs.request import SongRequest
from bygheartd.store.store import Store

pytestmark = pytest.mark.anyio

LYRICS = "[Verse]\nStreetlights hum a slow refrain\n\n[Chorus]\nCall my name"


@pytest.fixture
async def service(make_config: MakeConfig) -> AsyncIterator[SongService]:
    service = open_service(make_config(None))
    try:
        yield service
    finally:
        await service.close()


async def keyed(service: SongService, request: SongRequest, key: str) -> Enqueued:
    """What an assistant's `generate_song` with an idempotency key asks of the service."""
    return await service.submit(Submission(request, Origin.MCP, idempotency_key=key))


async def test_the_same_key_with_the_same_normalised_request_returns_the_job(
    service: SongService,
) -> None:
    first = await keyed(
        service,
        service.build_request({"lyrics": LYRICS, "key": "Am", "time_signature": "4/4"}),
        "key-1",
    )
    # Spelled differently, normalised the same: the same request.
    again = await keyed(
        service,
        service.build_request({"time_signature": "4", "key": "A minor", "lyrics": LYRICS}),
        "key-1",
    )
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert len(await service.list()) == 1


async def test_the_same_key_with_another_request_is_an_error_naming_the_key_and_the_job(
    service: SongService,
) -> None:
    first = (await keyed(service, service.build_request({"lyrics": LYRICS}), "key-1")).job
    with pytest.raises(IdempotencyConflict) as raised:
        await keyed(service, service.build_request({"lyrics": LYRICS, "bpm": 90}), "key-1")
    assert isinstance(raised.value, ServiceError)
    assert raised.value.key == "key-1" and raised.value.job_id == first.id
    assert str(raised.value) == (
        f"idempotency key 'key-1' was used for job {first.id} with a different request: "
        "use a new key, or send the same request to get that job back"
    )
    assert [job.id for job in await service.list()] == [first.id]


async def test_a_title_is_part_of_the_request_a_key_names(service: SongService) -> None:
    await keyed(service, service.build_request({"lyrics": LYRICS, "title": "One"}), "key-1")
    with pytest.raises(IdempotencyConflict):
        await keyed(service, service.build_request({"lyrics": LYRICS, "title": "Two"}), "key-1")


async def test_a_plugin_changing_the_queued_job_does_not_make_its_own_request_a_conflict(
    service: SongService,
) -> None:
    """The comparison is with the request as it was queued, not as plugins rewrote it."""
    request = service.build_request({"lyrics": LYRICS})
    first = (await keyed(service, request, "key-1")).job
    changed = service.build_request({"lyrics": LYRICS, "bpm": 120})
    await service.store.update(
        first.id,
        event="changed by plugins",
        request=changed.model_dump(mode="json", exclude_none=True),
        result=first.result.but(request_before_plugins=first.request),
    )
    again = await keyed(service, service.build_request({"lyrics": LYRICS}), "key-1")
    assert again.job.id == first.id and not again.created


def test_processes_racing_with_one_new_key_all_get_the_one_job(make_config: MakeConfig) -> None:
    """Two faces in two processes (stdio MCP and the daemon's HTTP MCP, say) asking with
    the same new key at once: one job, and every caller gets it (no IntegrityError)."""
    import multiprocessing

    config = make_config(None)
    Store.open(config.state_dir).close()  # migrated once, before the race
    assert config.source_path is not None
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(6) as pool:
        start = manager.Event()
        pending = [
            pool.apply_async(_enqueue_with_key, (str(config.source_path), start)) for _ in range(6)
        ]
        start.set()
        ids = [p.get(timeout=60) for p in pending]
    assert len(set(ids)) == 1, ids
    store = Store.open(config.state_dir)
    try:
        assert [j.id for j in store.list_jobs()] == [ids[0]]
    finally:
        store.close()


def _enqueue_with_key(config_path: str, start: object) -> str:
    import asyncio
    from pathlib import Path

    from bygheartd.config import load_config

    config = load_config(Path(config_path))

    async def enqueue() -> str:
        service = open_service(config)
        try:
            request = service.build_request({"lyrics": LYRICS})
            start.wait(30)  # type: ignore[attr-defined]  # all at once, from here
            return (await keyed(service, request, "raced")).job.id
        finally:
            await service.close()

    return asyncio.run(enqueue())
