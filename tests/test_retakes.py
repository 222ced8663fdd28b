"""Retakes (DESIGN.md "Takes you can keep"): when no take passes the quality gate, the song is
made again with a new seed, within `[retakes]` and the budget; the new takes join the job, the
passing one is its keeper, and nothing is spent silently (history, log, `follow`, webhook)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import TEST_KEY, MakeConfig
from test_plugins_webhook import Receiver, receiver  # noqa: F401 (a fixture)

from bygheartd import catalog
from bygheartd.cli.demo import retake_lines
from bygheartd.config import Config
from bygheartd.engine.retakes import NO_PASS_WARNING, retakes_possible
from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings

pytestmark = pytest.mark.anyio

MODEL = "bygheart-melody-fast"
COST = catalog.credit_cost(MODEL, 1, "bygheart")

SONG = """---
title: {title}
style: bright synth pop{marker}
model: bygheart-melody-fast
duration: 30
---
[Verse]
made again until it is whole
"""
# The first task with this caption comes back cut short; the next one (the retake) is good.
ONCE = " [sim:cut_short, times=1]"
ALWAYS = " [sim:cut_short]"


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.1, audio_scale=0.1, seed=3)  # 3 s takes of 30 s


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Retakes keep their count in the job's result: the same on both stores."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_url"))


def gated(
    make_config: MakeConfig,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    *,
    retakes: dict[str, Any],
    **sections: dict[str, Any],
) -> Config:
    """A config with the quality gate on (3 s of 30 passes; 1.2 s is cut short)."""
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    plugins = sections.pop("plugins", {"enabled": ["quality"]})
    return make_config(
        simulator,
        plugins=plugins,
        retakes=retakes,
        **{"plugins.quality": {"min_duration_ratio": 0.05}},
        **sections,
    )


async def make(runtime: Runtime, folder: Path, title: str, marker: str) -> Job:
    path = folder / f"{title}.txt"
    path.write_text(SONG.format(title=title, marker=marker))
    job = await runtime.service.submit_file(path)
    done = await runtime.service.wait(job.id, timeout=60)
    assert done.status is JobStatus.DONE, done.reason
    return done


def sidecar(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (Path(job.output or "") / f"{job.base_name}.json").read_text()
    )
    return data


async def events(runtime: Runtime, job: Job) -> list[tuple[str, str | None]]:
    return [(e.event, e.reason) for e in await runtime.service.history(job)]


async def test_a_take_cut_short_is_made_again_and_the_passing_retake_is_kept(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keepers = tmp_path / "phone"
    config = gated(
        make_config,
        simulator,
        monkeypatch,
        retakes={"max": 1},
        folders={"keepers": str(keepers)},
        store={"url": store_url},
    )
    caplog.set_level(logging.WARNING, logger="bygheartd.engine.lifecycle")
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await make(runtime, tmp_path, "night drive", ONCE)
        first, retake = done.takes()
        assert (first.path.name, retake.path.name) == ("night-drive.mp3", "night-drive.take2.mp3")
        assert first.path.exists() and retake.path.exists()  # the bad take is kept too
        data = sidecar(done)
        quality = data["quality"]
        assert [quality[f.path.name]["verdict"] for f in (first, retake)] == ["fail", "pass"]
        assert [quality[f.path.name]["take"] for f in (first, retake)] == [1, 2]
        assert [f["code"] for f in quality[first.path.name]["findings"]] == ["cut_short"]
        # The passing retake is the keeper, and the phone folder holds exactly it.
        assert (data["keeper"], data["keeper_by"]) == (retake.path.name, "gate")
        assert done.keeper_record() is not None and done.keeper_record()["take"] == 2  # type: ignore[index]
        assert sorted(p.name for p in keepers.iterdir()) == ["night-drive.mp3"]
        assert (keepers / "night-drive.mp3").read_bytes() == retake.path.read_bytes()
        # A new seed, both paid for, and the history says why.
        seeds = data["seeds"]
        assert len(seeds) == 2 and seeds[0] != seeds[1]
        assert data["credits"] == done.as_record()["credits"] == 2 * COST
        assert (await runtime.service.charged([done]))[done.id] == 2 * COST
        assert await runtime.engine.budget.retake_credits_today() == COST  # type: ignore[union-attr]
        history = await events(runtime, done)
        [(_, why)] = [e for e in history if e[0] == "retake"]
        assert why is not None and why.startswith(
            f"retake 1 of 1, {catalog.credits_phrase(COST)}: "
        )
        assert "night-drive.mp3 is 1.2 s long" in why
        assert "retry the job" not in why  # the retake is the retry: no advice to do it
        assert [e for e, _ in history].count("submitting") == 2
        assert not any(w.startswith(NO_PASS_WARNING) for w in done.warnings)
        assert data["history"][-1]["event"] == "done"
    # The daemon's log says so too.
    assert any("is made again: retake 1 of 1" in r.getMessage() for r in caplog.records)


async def test_retakes_max_0_never_makes_a_song_again(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 0})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await make(runtime, tmp_path, "once only", ONCE)
        assert [f.path.name for f in done.takes()] == ["once-only.mp3"]
        assert f"{NO_PASS_WARNING} (retakes are off ([retakes] max = 0))" in done.warnings
        history = await events(runtime, done)
        assert "retake" not in [e for e, _ in history]
        assert [e for e, _ in history].count("submitting") == 1
        assert (await runtime.service.charged([done]))[done.id] == COST
        assert sidecar(done)["keeper"] == "once-only.mp3"  # the best there is, still named


async def test_retakes_stop_when_used_up_and_when_the_daily_allowance_is_spent(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Every take of both songs is cut short: the first song gets its one retake (and ends
    with the warning), which spends the day's retake allowance, so the second gets none."""
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 1, "daily_credits": COST})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        first = await make(runtime, tmp_path, "first", ALWAYS)
        assert len(first.takes()) == 2
        assert any("its retake is used up ([retakes] max = 1)" in w for w in first.warnings)
        second = await make(runtime, tmp_path, "second", ALWAYS)
        assert len(second.takes()) == 1
        [warning] = [w for w in second.warnings if w.startswith(NO_PASS_WARNING)]
        assert (
            f"today's retake allowance is spent: {COST} of {catalog.credits_phrase(COST)} used, "
            f"a retake needs {COST} ([retakes] daily_credits)" in warning
        )
        assert "retake" not in [e for e, _ in await events(runtime, second)]
        charged = await runtime.service.charged([first, second])
        assert charged == {first.id: 2 * COST, second.id: COST}


async def test_findings_not_named_in_when_make_no_retake(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 1, "when": ["silent"]})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await make(runtime, tmp_path, "not asked", ONCE)
        assert len(done.takes()) == 1
        assert f"{NO_PASS_WARNING} (cut_short not in [retakes] when)" in done.warnings


async def test_the_cost_shown_before_submitting_says_what_retakes_may_add(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert catalog.cost_phrase(2) == "2 credits"
    assert catalog.cost_phrase(2, 1) == "2 credits, up to 4 with one retake"
    assert catalog.cost_phrase(2, 2) == "2 credits, up to 6 with 2 retakes"
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 2, "daily_credits": 10})
    assert retakes_possible(4, config) == 2
    assert retakes_possible(6, config) == 1  # the daily allowance pays one
    assert retakes_possible(11, config) == 0
    no_gate = config.replaced(plugins=config.plugins.replaced(enabled=["tags"]))
    assert retakes_possible(2, no_gate) == 0  # no quality gate, no retake
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        outlook = await runtime.service.budget_outlook(COST)
        assert outlook.text().startswith(
            f"{catalog.credits_phrase(COST)}, up to {3 * COST} with 2 retakes, "
        ), outlook.text()
    # `submit --dry-run` says it the same way.
    song = Path(str(config.source_path)).parent / "dry.txt"
    song.write_text(SONG.format(title="dry", marker=""))
    shown = bgh("submit", "--dry-run", str(song), config=config)
    assert shown.returncode == 0, shown.stderr
    assert f"{catalog.credits_phrase(COST)}, up to {3 * COST} with 2 retakes" in shown.stdout


def bgh(*args: str, config: Config) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BYGHEART_API_KEY": TEST_KEY,
        "COLUMNS": "250",
    }
    env.pop("BYGHEARTD_LOAD_PLUGINS", None)
    cmd = [sys.executable, "-m", "bygheartd", "--config", str(config.source_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


async def test_a_retake_shows_in_follow_and_is_posted_by_the_webhook(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    config = gated(
        make_config,
        simulator,
        monkeypatch,
        retakes={"max": 1},
        plugins={"enabled": ["quality", "webhook"]},
        **{"plugins.webhook": {"url": receiver.url}},
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await make(runtime, tmp_path, "told", ONCE)
        await runtime.engine.lifecycle.drain(10)  # type: ignore[union-attr]
    posted = {h["x-bygheartd-event"]: json.loads(body) for h, body in receiver.requests}
    assert set(posted) == {"retake", "complete"}
    assert posted["retake"]["job"]["id"] == done.id
    assert posted["retake"]["job"]["status"] == "queued"
    assert posted["retake"]["reason"].startswith(f"retake 1 of 1, {catalog.credits_phrase(COST)}: ")
    assert "cut short" in posted["retake"]["reason"] or "1.2 s long" in posted["retake"]["reason"]
    # `bygheartd demo` prints the same: the retake, then the keeper.
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        retake, keeper = await retake_lines(runtime.service, [done])
    assert retake.startswith(f"retake  {done.id}  told: retake 1 of 1")
    assert keeper == f"keeper  {done.id}  told: take 2, told.take2.mp3 (chosen by the quality gate)"
    followed = bgh("follow", done.id, config=config)
    assert followed.returncode == 0, followed.stderr
    [line] = [x for x in followed.stdout.splitlines() if " retake " in x]
    assert "processing → queued: retake 1 of 1" in line


async def test_a_retake_of_two_takes_adds_take3_and_take4(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 1})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        path = tmp_path / "pair.txt"
        path.write_text(
            SONG.format(title="pair", marker=ONCE).replace("---\n[", "takes: 2\n---\n[", 1)
        )
        job = await runtime.service.submit_file(path)
        done = await runtime.service.wait(job.id, timeout=60)
        assert done.status is JobStatus.DONE, done.reason
        names = [f.path.name for f in done.takes()]
        assert names == ["pair.mp3", "pair.take2.mp3", "pair.take3.mp3", "pair.take4.mp3"]
        quality = sidecar(done)["quality"]
        assert [quality[n]["verdict"] for n in names] == ["fail", "fail", "pass", "pass"]
        assert [quality[n]["take"] for n in names] == [1, 2, 3, 4]
        assert sidecar(done)["keeper"] in ("pair.take3.mp3", "pair.take4.mp3")
        assert len(set(sidecar(done)["seeds"])) == 4


async def test_the_daily_retake_allowance_counts_retake_refunds_back(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retake whose generation failed (refunded) gives its credits back to the day."""
    config = gated(make_config, simulator, monkeypatch, retakes={"max": 1})
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        budget = runtime.engine.budget  # type: ignore[union-attr]
        day, month = budget.period()
        store = runtime.service.store
        for credits, kind in ((3, "reserve"), (2, "retake"), (2, "retake"), (-2, "retake refund")):
            await store.record_credits(
                job_id="x", model=MODEL, credits=credits, kind=kind, day=day, month=month
            )
        assert await budget.retake_credits_today() == 2
        assert await store.credits_spent(day=day) == 5  # every kind counts against the caps


async def test_a_retake_that_fails_on_the_server_ends_the_song_with_the_takes_it_had(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    store_url: str,
) -> None:
    config = gated(
        make_config, simulator, monkeypatch, retakes={"max": 1}, store={"url": store_url}
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        path = tmp_path / "night drive.txt"
        path.write_text(SONG.format(title="night drive", marker=ONCE))
        job = await runtime.service.submit_file(path)
        with anyio.fail_after(30):
            while (await runtime.service.get(job.id)).status in (
                JobStatus.QUEUED,
                JobStatus.SUBMITTING,
            ):
                await anyio.sleep(0.01)
        # The first task's fate is decided: from now on the server fails every task, so
        # the retake fails on the server (status 2, no reason), after its credits are paid.
        simulator.set_faults(failure_rate=1.0)
        done = await runtime.service.wait(job.id, timeout=60)
        assert done.status is JobStatus.DONE, done.reason
        [take] = done.takes()
        assert take.path.name == "night-drive.mp3" and take.path.is_file()
        assert done.keeper_record() is not None
        assert any(w.startswith("the retake failed: ") for w in done.warnings), done.warnings
        assert any(w.startswith(NO_PASS_WARNING) for w in done.warnings)  # it still did not
        history = [e for e, _ in await events(runtime, done)]
        assert history.count("retake") == 1 and history.count("retake failed") == 1
        assert history[-1] == "done"
        data = sidecar(done)
        assert data["keeper"] == "night-drive.mp3" and data["status"] == "done"
