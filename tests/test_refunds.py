"""Refunds against the real simulator: a job gets back only credits the server did not
charge. A retry refunds its own reservation and no earlier one, a submit whose outcome a
crash made unknown keeps its reservation, and an error after generation refunds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _jobs import song, until
from conftest import TEST_KEY, MakeConfig

from bygheartd.engine.budget import Budget
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime, open_service
from bygheartd.simulator import RunningSimulator, key_label

pytestmark = pytest.mark.anyio


def used_today(sim: RunningSimulator) -> int:
    row: dict[str, Any] = sim.sim.ledger.snapshot()[key_label(TEST_KEY)]
    return int(row["used_today"])


async def test_a_retry_that_fails_refunds_only_its_own_reservation(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The first attempt's outcome was unknown (the server charged it): a later refund of
    the retry must not give that charge back too."""
    simulator.set_faults(lose_submit_reply=1)
    config = make_config(simulator)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, "a.txt", title="Lost Reply"))
        job = await runtime.service.wait(job.id, timeout=20)
        assert job.status is JobStatus.FAILED and "outcome unknown" in (job.reason or "")
        simulator.set_faults(server_error_on_submit=1)
        await runtime.service.retry(job.id)
        job = await until(runtime.store, job.id, {JobStatus.FAILED}, timeout=20)
        job = await runtime.service.wait(job.id, timeout=20)
        spent = (await runtime.service.credits())["today"]["spent"]
        balance = await runtime.store.job_credit_balance(job.id)
    assert job.status is JobStatus.FAILED and "refused" in (job.reason or "")
    assert used_today(simulator) == 1  # the lost-reply task was created and charged
    assert spent == 1 and balance == 1


async def test_a_job_left_submitting_by_a_crash_keeps_its_reservation(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """`kill -9` during the POST: the task may exist and be charged, so no local refund."""
    config = make_config(simulator)
    service = open_service(config)
    job = await service.submit_file(
        song(tmp_path, "a.txt", title="Crashed", model="bygheart-studio-pro")
    )
    budget = Budget(config, service.store)
    await service.store.transition(  # exactly what the engine commits before its POST
        job.id,
        JobStatus.SUBMITTING,
        event="submitting",
        expect={JobStatus.QUEUED},
        ledger=budget.ledger_entry(job.id, job.model, 2, "reserve"),
        attempts=1,
    )
    await service.close()
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await until(runtime.store, job.id, {JobStatus.FAILED})
        balance = await runtime.store.job_credit_balance(job.id)
        history = await runtime.store.history(job.id)
    assert job.status is JobStatus.FAILED and "outcome unknown" in (job.reason or "")
    assert balance == 2
    assert not any(e.event == "refunded" for e in history)
    assert simulator.sim.stats.submits == 0


async def test_an_error_after_generation_never_refunds_the_charged_song(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    # something in the way of the sidecar's temporary file: delivery cannot finish
    (config.folders.output / ".blocked.json.tmp").mkdir()
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, "a.txt", title="Blocked"))
        job = await runtime.service.wait(job.id, timeout=20)
        spent = (await runtime.service.credits())["today"]["spent"]
    assert job.status is JobStatus.FAILED
    assert used_today(simulator) == 1  # the generation succeeded: the server charged it
    assert spent == 1
