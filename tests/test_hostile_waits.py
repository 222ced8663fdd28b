"""A server that names absurd waits, or whose polls keep failing (audit F3, F4, F5).

The real simulator behind a misbehaving proxy answers a submit or the polls of one task
with a 429 whose `Retry-After` is ten years or 1e12 seconds, or answers every poll with a
body that is not JSON. The daemon waits within its own ceilings and says so, never strands
a job in `submitting` nor charges a refused submit, keeps polling and finishing the other
jobs, and ends a job whose polls keep failing at `job_deadline_seconds`, with the poll's
error in the reason; `show` and `status` say that polls fail, and since when.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from _jobs import song, until
from _misbehaving import MisbehavingProxy, Rule
from conftest import MakeConfig

from bygheartd.api.errors import MAX_RETRY_AFTER_SECONDS
from bygheartd.cli.display import poll_trouble
from bygheartd.jobs import HoldKind, Job, JobStatus, utcnow
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.servers import server_line
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread

pytestmark = pytest.mark.anyio

HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time
# Ten years, and a number of seconds no `datetime` can be moved by.
ABSURD = ["315360000", "1e12"]


async def enqueue(runtime: Runtime, tmp_path: Path, name: str) -> Job:
    return await runtime.service.submit_file(song(tmp_path, f"{name}.txt", title=name))


async def wait_for(runtime: Runtime, job: Job, test: str, check: object) -> Job:
    """The job once `check(job)` holds (`test` names what is awaited, for a failure)."""
    assert callable(check)
    with anyio.fail_after(HANG):
        while True:
            current = await runtime.store.get(job.id)
            if check(current):
                return current
            await anyio.sleep(0.02)
    raise AssertionError(test)  # pragma: no cover - fail_after raises first


async def status_line(runtime: Runtime, words: str) -> str:
    """`status`'s line for the one server, once it says `words` (the engine publishes its
    view of the server a moment after it changed)."""
    with anyio.fail_after(HANG):
        while True:
            [line] = [server_line(r) for r in await runtime.service.servers()]
            if words in line:
                return line
            await anyio.sleep(0.02)
    raise AssertionError(words)  # pragma: no cover - fail_after raises first


async def polled_after(rule: Rule, instant: datetime) -> None:
    """Once the engine has asked the server again after `instant` (a positive sign that it
    looked at the job past its deadline), never a fixed sleep."""
    with anyio.fail_after(HANG):
        while utcnow() <= instant:
            await anyio.sleep(0.05)
        seen = rule.hits
        while rule.hits <= seen:
            await anyio.sleep(0.05)


def engine_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("retry_after", ABSURD)
async def test_a_submit_429_asking_for_years_holds_one_job_an_hour_at_most(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    retry_after: str,
) -> None:
    simulator.set_faults(latency=0.2)
    refuse = Rule("POST /release_task", "refuse", status=429, retry_after=retry_after, times=1)
    with MisbehavingProxy(simulator.base_url, refuse) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            first = await enqueue(runtime, tmp_path, "refused")
            first = await until(runtime.store, first.id, {JobStatus.HELD})
            asked_at = utcnow()
            # The other songs are not paused for the server's ten years: sent and made.
            second = await enqueue(runtime, tmp_path, "after")
            second = await runtime.service.wait(second.id, timeout=HANG)
            first = await runtime.store.get(first.id)
            charged = await runtime.service.charged([first, second])
    assert first.status is JobStatus.HELD and first.hold_kind is HoldKind.RATE
    assert first.resumes_at is not None
    assert first.resumes_at <= asked_at + timedelta(seconds=MAX_RETRY_AFTER_SECONDS)
    reason = first.reason or ""
    assert reason.startswith("rate limited by the API: POST /release_task: HTTP 429")
    assert "(Retry-After); waiting at most 60 min" in reason
    asked = "3650 days" if retry_after == "315360000" else "over 3660 days"
    assert f"the server asked to wait {asked} (Retry-After)" in reason
    assert charged[first.id] == 0  # refused: nothing made, nothing charged
    assert second.status is JobStatus.DONE and charged[second.id] == second.credits
    assert simulator.sim.stats.submits == 1
    assert not engine_errors(caplog)


@pytest.mark.parametrize("retry_after", ABSURD)
async def test_a_poll_429_asking_for_years_pauses_polls_briefly_and_the_song_outlives_the_deadline(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    retry_after: str,
) -> None:
    """A 429 says nothing about the task: polls pause within their ceiling, the deadline
    does not end the song while the server refuses, and it is fetched once it answers."""
    simulator.set_faults(latency=1.0)
    # Every poll that asks about the first task is answered 429 (its id set once known).
    refuse = Rule("POST /query_result", "refuse", status=429, retry_after=retry_after)
    refuse.body_match = b"\x00nothing yet"
    with MisbehavingProxy(simulator.base_url, refuse) as proxy:
        config = make_config(
            simulator,
            api={"base_url": proxy.origin},
            queue={"poll_max_seconds": 0.25, "job_deadline_seconds": 2},
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            stuck = await enqueue(runtime, tmp_path, "stuck")
            stuck = await until(runtime.store, stuck.id, {JobStatus.RUNNING})
            assert stuck.task_id and stuck.submitted_at
            refuse.body_match = stuck.task_id.encode()
            other = await enqueue(runtime, tmp_path, "other")
            failing = await wait_for(
                runtime, stuck, "polls failing", lambda j: j.result.poll_error is not None
            )
            shown = poll_trouble(failing)
            line = await status_line(runtime, "polls failing since")
            # The other task, polled beside it at first, is polled alone and finishes.
            other = await runtime.service.wait(other.id, timeout=HANG)
            # A poll refused after the deadline (a positive sign the engine looked again)...
            await polled_after(refuse, stuck.submitted_at + timedelta(seconds=2))
            past = await runtime.store.get(stuck.id)
            # ...left the song running; once the server answers, it is fetched.
            refuse.body_match = b"\x00answering again"
            stuck = await runtime.service.wait(stuck.id, timeout=HANG)
    assert other.status is JobStatus.DONE
    assert past.status is JobStatus.RUNNING, past.reason
    assert stuck.status is JobStatus.DONE, stuck.reason
    assert shown is not None and shown.startswith("failing since ")
    assert "HTTP 429" in shown and "(Retry-After); waiting at most" in shown
    assert ": polls failing since " in line and "healthy" not in line
    assert refuse.hits >= 2  # asked about again after the pause, never ten years later
    assert not engine_errors(caplog)


@pytest.mark.parametrize("status", [503, 401])
async def test_polls_that_reach_no_server_across_the_deadline_still_deliver_the_song(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """The network down, or the key refused, at the deadline: the server still holds the
    paid result, so the song waits for it and is delivered when polls work again."""
    simulator.set_faults(latency=0.3)
    down = Rule("POST /query_result", "refuse", status=status)
    with MisbehavingProxy(simulator.base_url, down) as proxy:
        config = make_config(
            simulator,
            api={"base_url": proxy.origin},
            queue={"poll_max_seconds": 0.25, "job_deadline_seconds": 1},
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "outage")
            job = await wait_for(
                runtime, job, "polls failing", lambda j: j.result.poll_error is not None
            )
            assert job.submitted_at
            await polled_after(down, job.submitted_at + timedelta(seconds=1))
            past = await runtime.store.get(job.id)
            down.match = "POST /nothing-matches-any-more"
            job = await runtime.service.wait(job.id, timeout=HANG)
    assert past.status is JobStatus.RUNNING, past.reason
    assert job.status is JobStatus.DONE, job.reason
    assert job.files and all(f.path.exists() for f in job.files)
    assert not engine_errors(caplog)


async def test_polls_answered_with_garbage_end_at_the_deadline_with_the_poll_error(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    simulator.set_faults(latency=0.3)
    body = b'{"code": 200, "data": "caf\xe9"}'  # latin-1: not UTF-8, so not JSON
    latin1 = Rule(
        "POST /query_result",
        "reply",
        status=200,
        headers={"Content-Type": "application/json"},
        body=body,
        content_length=len(body),
    )
    with MisbehavingProxy(simulator.base_url, latin1) as proxy:
        config = make_config(
            simulator, api={"base_url": proxy.origin}, queue={"job_deadline_seconds": 3}
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "garbage")
            failing = await wait_for(
                runtime, job, "polls failing", lambda j: j.result.poll_error is not None
            )
            shown = poll_trouble(failing)
            line = await status_line(runtime, "polls failing since")
            job = await runtime.service.wait(job.id, timeout=HANG)
            # Nothing left to poll: nothing is failing any more.
            after = await status_line(runtime, ": healthy;")
    assert job.status is JobStatus.FAILED
    reason = job.reason or ""
    assert reason.startswith("no result after ") and "(job_deadline_seconds)" in reason
    assert "its polls failed since " in reason
    assert "POST /query_result: HTTP 200: reply is not JSON" in reason
    assert "polls failing" not in after
    assert shown is not None and shown.startswith("failing since ")
    assert "reply is not JSON" in shown
    assert ": polls failing since " in line and "reply is not JSON" in line
    assert "healthy" not in line
    assert latin1.hits >= 2
    assert not engine_errors(caplog)


async def test_an_unexpected_submit_error_never_leaves_a_job_in_submitting(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """The submit's last resort (`Engine._rescue`, what runs when handling a reply raised,
    as a 1e12 `Retry-After` once did): what the submit got to decides where the job goes,
    through the lifecycle. No server is needed: the POST's outcome is the input."""
    from bygheartd.api.errors import RateLimited
    from bygheartd.api.factory import make_client
    from bygheartd.engine.engine import Engine, _SubmitStep

    config = make_config(None)
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        client = make_client(config)
        engine = Engine(config, runtime.store, client)
        boom = OverflowError("date value out of range")
        refused = RateLimited("POST /release_task: HTTP 429: slow down")
        outcomes: dict[str, Job] = {}
        for name, step in (
            ("answered", _SubmitStep(sent=True, answer=refused)),
            ("unsent", _SubmitStep()),
            ("lost", _SubmitStep(sent=True)),
            ("made", _SubmitStep(sent=True, task_id="task-77")),
        ):
            job = await enqueue(runtime, tmp_path, name)
            sending = await engine.lifecycle.submitting(job, credits=job.credits, server=None)
            assert sending is not None and sending.status is JobStatus.SUBMITTING
            await engine._rescue(sending, boom, step)
            outcomes[name] = await runtime.store.get(job.id)
        charged = await runtime.service.charged(list(outcomes.values()))
        await client.aclose()
    answered, unsent = outcomes["answered"], outcomes["unsent"]
    lost, made = outcomes["lost"], outcomes["made"]
    for job in (answered, unsent):  # no task exists: held for a retry, nothing charged
        assert job.status is JobStatus.HELD and job.hold_kind is HoldKind.RETRY
        assert (job.reason or "").startswith(
            "internal error while submitting: OverflowError: date value out of range"
        )
        assert charged[job.id] == 0
    assert "(the server answered: POST /release_task: HTTP 429: slow down)" in (
        answered.reason or ""
    )
    # Sent and no readable answer: the outcome is truly unknown, its credits stay counted.
    assert lost.credits > 0
    assert lost.status is JobStatus.FAILED and charged[lost.id] == lost.credits
    assert (lost.reason or "").startswith("submission outcome unknown (internal error")
    assert made.status is JobStatus.FAILED and charged[made.id] == made.credits
    assert "the server made task task-77, which may be charged" in (made.reason or "")


async def test_a_credit_limit_waits_for_the_plans_reset_32_days_at_most(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    body = b'{"error": "credit_limit_reached", "scope": "monthly"}'
    capped = Rule(
        "POST /release_task",
        "reply",
        status=429,
        headers={"Content-Type": "application/json", "Retry-After": "1e12"},
        body=body,
        content_length=len(body),
        times=1,
    )
    with MisbehavingProxy(simulator.base_url, capped) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await enqueue(runtime, tmp_path, "capped")
            job = await until(runtime.store, job.id, {JobStatus.HELD})
            asked_at = utcnow()
            [charged] = (await runtime.service.charged([job])).values()
    assert job.hold_kind is HoldKind.RATE and job.resumes_at is not None
    # The month's reset may be a month away; ten thousand years are not believed.
    assert asked_at + timedelta(days=31) < job.resumes_at <= asked_at + timedelta(days=32)
    reason = job.reason or ""
    assert reason.startswith("the server's credit limit is reached: POST /release_task: HTTP 429")
    assert "(the server asked to wait over 3660 days (Retry-After); waiting at most 32 days)" in (
        reason
    )
    assert charged == 0


def test_every_server_wait_is_bounded_by_its_use() -> None:
    from bygheartd.api.errors import (
        MAX_CREDIT_WAIT_SECONDS,
        RETRY_AFTER_PARSE_LIMIT,
        bounded_wait,
        parse_retry_after,
        poll_pause_ceiling,
    )

    assert parse_retry_after("1e12") == RETRY_AFTER_PARSE_LIMIT
    assert parse_retry_after("1e999") is None  # not a number of seconds
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == RETRY_AFTER_PARSE_LIMIT
    assert utcnow() + timedelta(seconds=RETRY_AFTER_PARSE_LIMIT) > utcnow()  # no overflow
    assert bounded_wait(None, 60) == (None, "")
    assert bounded_wait(45.0, 60) == (45.0, "")
    wait, note = bounded_wait(315360000.0, MAX_RETRY_AFTER_SECONDS)
    assert wait == 3600.0
    assert note == "the server asked to wait 3650 days (Retry-After); waiting at most 60 min"
    assert bounded_wait(40 * 86400.0, MAX_CREDIT_WAIT_SECONDS)[0] == 32 * 86400.0
    # Polls: four poll intervals, five minutes at most.
    assert poll_pause_ceiling(30) == 120 and poll_pause_ceiling(600) == 300


async def test_a_submit_that_reaches_no_server_waits_past_max_attempts_for_the_api(
    make_config: MakeConfig, tmp_path: Path, sim_settings: SimulatorSettings
) -> None:
    """No connection: nothing can have been made or charged, so the song is never failed
    for it (a Wi-Fi drop, a daemon started before the network): it waits, and is made once
    the API is there."""
    from _servers import closed_port

    port = closed_port()
    config = make_config(
        None,
        api={"base_url": f"http://127.0.0.1:{port}"},
        queue={"max_attempts": 2, "retry_base_seconds": 0.02, "retry_max_seconds": 0.05},
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await enqueue(runtime, tmp_path, "offline")
        waiting = await wait_for(
            runtime,
            job,
            "held past max_attempts",
            lambda j: j.attempts > 2 and j.status is JobStatus.HELD,
        )
        with run_in_thread(sim_settings, port=port):
            job = await runtime.service.wait(job.id, timeout=HANG)
    assert (waiting.reason or "").startswith("waiting for the API to be reachable: ")
    assert "no connection was made" in (waiting.reason or "")
    assert job.status is JobStatus.DONE, job.reason
