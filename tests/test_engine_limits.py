"""The engine behind a misbehaving proxy in front of the real simulator: a poll reply that
drips, a download that stalls, a download redirected to another host, a result whose
`file` points at another host. One stuck exchange never holds up other jobs, it ends with a
reason that names the limit it hit, and refusals fail a job once with what really happened.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
from _jobs import song, until
from _misbehaving import MisbehavingProxy, Rule
from conftest import MakeConfig

from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time


async def enqueue(runtime: Runtime, tmp_path: Path, name: str) -> Job:
    return await runtime.service.submit_file(song(tmp_path, f"{name}.txt", title=name))


async def held_for_download(runtime: Runtime, job: Job) -> list[str]:
    return [
        e.reason or ""
        for e in await runtime.store.history(job.id)
        if e.event == "held (download)" and e.to_status == "held"
    ]


async def test_a_dripping_poll_fails_clearly_and_submits_go_on(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    simulator.set_faults(latency=120.0)  # tasks keep running: only polls happen
    with MisbehavingProxy(simulator.base_url, Rule("POST /query_result", "drip")) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin, "timeout_seconds": 1})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            first = await enqueue(runtime, tmp_path, "first")
            first = await until(runtime.store, first.id, {JobStatus.RUNNING})
            with anyio.fail_after(HANG):
                while not proxy.seen("/query_result"):  # a poll is dripping now
                    await anyio.sleep(0.02)
            second = await enqueue(runtime, tmp_path, "second")
            second = await until(runtime.store, second.id, {JobStatus.RUNNING})
            with anyio.fail_after(HANG):
                while "poll failed" not in caplog.text:
                    await anyio.sleep(0.05)
    assert first.status is JobStatus.RUNNING
    assert second.status is JobStatus.RUNNING and second.task_id  # submitted meanwhile
    [failed, *_] = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert "POST /query_result: no complete reply within 1 s ([api] timeout_seconds" in failed
    assert "maximum number of running instances" not in caplog.text
    assert simulator.sim.stats.submits == 2


async def test_a_stalled_download_holds_only_its_own_job(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=0.3)
    # The first song file asked for stalls after 512 bytes, on every attempt.
    stall = Rule("GET /v1/audio", "stall", after_body_bytes=512, first_target_only=True)
    with MisbehavingProxy(simulator.base_url, stall) as proxy:
        config = make_config(
            simulator, api={"base_url": proxy.origin, "download_stall_seconds": 0.3}
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            jobs = [await enqueue(runtime, tmp_path, name) for name in ("one", "two")]
            with anyio.fail_after(HANG):
                while True:
                    current = [await runtime.store.get(j.id) for j in jobs]
                    done = [j for j in current if j.status is JobStatus.DONE]
                    stuck = [j for j in current if await held_for_download(runtime, j)]
                    if done and stuck:
                        break
                    await anyio.sleep(0.02)
            [done_job], [stuck_job] = done, stuck
            holds = [e for e in await runtime.store.history(stuck_job.id) if e.to_status == "held"]
    assert stuck_job.id != done_job.id and stuck_job.status is not JobStatus.DONE
    [reason, *_] = [e.reason or "" for e in holds]
    assert reason.startswith("download interrupted: GET /v1/audio?path=")
    assert "no bytes for 0.3 s" in reason and "[api] download_stall_seconds" in reason
    # The other song finished while this one was still stuck on its first hold.
    assert done_job.completed_at is not None and done_job.completed_at < holds[0].at
    assert proxy.rules[0].pinned is not None and not stuck_job.files


async def test_a_download_redirected_to_another_host_fails_once_saying_so(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=0.2)
    away = Rule("GET /v1/audio", "redirect", location="http://cdn.example.invalid/song.mp3")
    with MisbehavingProxy(simulator.base_url, away) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "moved")
            job = await runtime.service.wait(job.id, timeout=HANG)
            holds = await held_for_download(runtime, job)
        audio_requests = proxy.seen("/v1/audio")
    assert job.status is JobStatus.FAILED
    reason = job.reason or ""
    assert reason.startswith("cannot download the audio: GET /v1/audio?path=")
    assert (
        "HTTP 302: the server redirected the download to another host (cdn.example.invalid): "
        "refused; the key is never sent elsewhere"
    ) in reason
    assert "no longer has the audio" not in reason
    assert len(audio_requests) == 1 and holds == []  # once: no retries, no holds


async def test_a_result_file_on_another_host_fails_once_without_sending_the_key(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=0.2, file_form="absolute_url")
    # Behind a proxy that passes the server its own Host, the server's absolute `file` URLs
    # name the server itself: another host:port than the API base URL the client uses.
    with MisbehavingProxy(simulator.base_url, rewrite_host=True) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "elsewhere")
            job = await runtime.service.wait(job.id, timeout=HANG)
            holds = await held_for_download(runtime, job)
        audio_requests = proxy.seen("/v1/audio")
    server = urlsplit(simulator.base_url)
    assert job.status is JobStatus.FAILED
    reason = job.reason or ""
    assert reason.startswith("cannot download the audio: the result's audio URL points to ")
    assert f"another host ({server.hostname}:{server.port})" in reason
    assert "refusing to send the API key there" in reason and "gave up" not in reason
    assert holds == [] and audio_requests == []
    assert simulator.sim.stats.http_requests["/v1/audio"] == 0


async def test_a_rate_limited_download_waits_as_told_and_is_no_strike(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=0.2)
    # The file server is busy for the first three tries; one strike would fail the song.
    busy = Rule("GET /v1/audio", "refuse", status=429, retry_after="1", times=3)
    with MisbehavingProxy(simulator.base_url, busy) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin}, queue={"max_attempts": 1})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "busy")
            job = await runtime.service.wait(job.id, timeout=HANG)
            holds = [e for e in await runtime.store.history(job.id) if e.event == "held (download)"]
            releases = [e for e in await runtime.store.history(job.id) if e.from_status == "held"]
    assert job.status is JobStatus.DONE, job.reason
    assert len(holds) == 3 and busy.hits == 3
    assert all((e.reason or "").startswith("download rate-limited: GET /v1/audio") for e in holds)
    assert all("HTTP 429" in (e.reason or "") for e in holds)
    # Each hold lasted at least the server's Retry-After (1 s), not retry_base_seconds (0.1).
    for hold, release in zip(holds, releases, strict=False):
        assert (release.at - hold.at).total_seconds() >= 0.95
    assert len(proxy.seen("/v1/audio")) == 4


async def test_a_download_refused_for_the_key_is_held_never_given_up(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """A 401 on the audio is about the key (rotated, revoked), not the song: the paid take
    waits for a key that works instead of failing after `max_attempts`."""
    simulator.set_faults(latency=0.2)
    refused = Rule("GET /v1/audio", "refuse", status=401, times=3)
    with MisbehavingProxy(simulator.base_url, refused) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin}, queue={"max_attempts": 1})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "refused")
            job = await runtime.service.wait(job.id, timeout=HANG)
            holds = await held_for_download(runtime, job)
    assert job.status is JobStatus.DONE, job.reason
    assert len(holds) == 3 and refused.hits == 3
    assert all(r.startswith("download refused: GET /v1/audio") for r in holds), holds
    assert all("HTTP 401" in r and "check the API key" in r for r in holds), holds
    assert simulator.sim.stats.submits == 1  # held and resumed: never made again
