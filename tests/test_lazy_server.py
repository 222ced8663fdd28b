"""A genuine ACE-Step server started lazily (ACESTEP_NO_INIT) loads every configured slot on
its first job; until then its inventory lists every model unloaded with `llm_initialized`
false, `/v1/models` lists none and its LoRA routes answer 500 "Model not initialized"
(captures R1-1..R1-8 in API-TRANSCRIPTS-TASKS.md). The simulator's `lazy_init` does the
same, byte for byte where the captures fix the bytes; and the engine treats such a server
as "not initialised yet" (its slots unknown), not as one without a base model: stems go
there one at a time until its first job has loaded it, then by its fresh inventory.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _daemon import cli
from _jobs import song
from _simprocs import free_port
from conftest import MakeConfig

from bygheartd.engine.pool import ServerPool
from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.edits import make_stems
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.simulator.server import run_in_thread

CAPTURES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "transcripts_tasks.json").read_text(encoding="utf-8")
)["steps"]
KEY = "test-key-123"
BEARER = {"Authorization": f"Bearer {KEY}"}
TURBO, BASE = "acestep-v15-turbo", "acestep-v15-base"
ON_DISK = "acestep-v15-sft,acestep-v15-xl-base,acestep-v15-xl-turbo"


def captured(step: str) -> Any:
    return json.loads(CAPTURES[step]["body"])


def lazy(**changes: Any) -> SimulatorSettings:
    """The capture's run 1: turbo in slot 1, base in slot 2, three more models on disk."""
    values: dict[str, Any] = {
        "backend": "acestep",
        "dit_models": f"{TURBO},{BASE}",
        "disk_models": ON_DISK,
        "lazy_init": True,
        "latency": 0.2,
        "audio_scale": 0.05,
        "seed": 3,
    }
    return SimulatorSettings(**(values | changes))


def run_one(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """One job straight on the server (R1-5/R1-6): its final result element."""
    task = httpx.post(url + "/release_task", json=body, headers=headers).json()["data"]["task_id"]
    for _ in range(500):
        [entry] = httpx.post(
            url + "/query_result", json={"task_id_list": [task]}, headers=headers
        ).json()["data"]
        if entry["status"] != 0:
            return json.loads(entry["result"])[0]
        time.sleep(0.02)
    raise AssertionError("the job never finished")


# -- the simulator against the captures ---------------------------------------------------


def test_the_lazy_simulator_answers_as_captured_before_and_after_its_first_job() -> None:
    with run_in_thread(lazy(api_key=KEY)) as sim:
        url = sim.base_url
        models_open = httpx.get(url + "/v1/models")
        models_keyed = httpx.get(url + "/v1/models", headers=BEARER)
        cold = httpx.get(url + "/v1/model_inventory", headers=BEARER)
        lora_cold = httpx.get(url + "/v1/lora/status", headers=BEARER)
        health_cold = httpx.get(url + "/health").json()["data"]
        warm_up = run_one(
            url, json.loads(CAPTURES["R1-5"]["request"].split("-d '")[1][:-1]), BEARER
        )
        models_warm = httpx.get(url + "/v1/models").json()
        warm = httpx.get(url + "/v1/model_inventory", headers=BEARER).json()
        lora_warm = httpx.get(url + "/v1/lora/status", headers=BEARER).json()
    # R1-1, R1-2: the OpenRouter list, empty, the same bytes with or without the key.
    for reply, step in ((models_open, "R1-1"), (models_keyed, "R1-2")):
        assert reply.status_code == CAPTURES[step]["status"] == 200
        assert reply.text == CAPTURES[step]["body"]
    # R1-3: every model on disk or in a slot, none loaded, llm_initialized false.
    body = cold.json()
    assert cold.status_code == 200 and list(body) == list(captured("R1-3"))
    assert body["data"] == captured("R1-3")["data"]
    assert body["code"] == 200 and body["error"] is None and body["extra"] is None
    # R1-4: the LoRA routes before the load, byte for byte.
    assert lora_cold.status_code == CAPTURES["R1-4"]["status"] == 500
    assert lora_cold.text == CAPTURES["R1-4"]["body"]
    assert health_cold["models_initialized"] is False
    # R1-6: the first job ran on slot 1 (it named no model).
    assert warm_up["dit_model"] == TURBO and warm_up["status"] == 1
    # R1-7: the loaded slots, in slot order, cards of the captured shape.
    cards = captured("R1-7")["data"]
    assert [c["id"] for c in models_warm["data"]] == [c["id"] for c in cards]
    for mine, theirs in zip(models_warm["data"], cards, strict=True):
        assert {k: v for k, v in mine.items() if k != "created"} == {
            k: v for k, v in theirs.items() if k != "created"
        }
    # R1-8: slots 1 and 2 loaded now; R1-12: the LoRA routes answer.
    assert warm["data"] == captured("R1-8")["data"]
    assert lora_warm["data"] == captured("R1-12")["data"]


def test_the_default_simulator_lists_its_slots_loaded_from_the_start() -> None:
    """Without lazy_init the inventory is that of a server that loaded at start-up (the
    existing tests rely on it); its LoRA routes still wait for the first job."""
    with run_in_thread(lazy(lazy_init=False)) as sim:
        inventory = httpx.get(sim.base_url + "/v1/model_inventory").json()["data"]
        listed = httpx.get(sim.base_url + "/v1/models").json()["data"]
    loaded = {m["name"]: m["is_loaded"] for m in inventory["models"]}
    assert loaded == {
        BASE: True,
        TURBO: True,
        "acestep-v15-sft": False,
        "acestep-v15-xl-base": False,
        "acestep-v15-xl-turbo": False,
    }
    assert [c["id"] for c in listed] == [f"acestep/{TURBO}", f"acestep/{BASE}"]


def test_bygheartd_simulator_lazy_init_flag(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "simulator", "--backend", "acestep",
         "--lazy-init", "--dit-models", f"{TURBO},{BASE}", "--disk-models", ON_DISK,
         "--latency", "0.1", "--audio-scale", "0.02", "--audio-dir", str(tmp_path / "audio"),
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        cold = httpx.get(url + "/v1/model_inventory").json()["data"]
        run_one(url, {"prompt": "warm-up", "batch_size": 1})
        warm = httpx.get(url + "/v1/model_inventory").json()["data"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert cold == captured("R1-3")["data"]
    assert warm == captured("R1-8")["data"]


# -- the engine against a lazily started server ---------------------------------------------


def pool_of(runtime: Runtime) -> ServerPool:
    assert runtime.engine is not None
    return runtime.engine.parts.pool


def wav(path: Path, seconds: float = 2.0) -> Path:
    import numpy as np
    import soundfile as sf

    sf.write(str(path), np.zeros((int(22050 * seconds), 1)), 22050)
    return path


async def wait_all(runtime: Runtime, jobs: list[Job]) -> list[Job]:
    return [await runtime.service.wait(j.id, timeout=60, interval=0.05) for j in jobs]


def extracts(sim: RunningSimulator) -> list[Any]:
    found = [t for t in sim.sim.tasks.values() if t.params.task_type == "extract"]
    return sorted(found, key=lambda t: t.seq)


@pytest.fixture
def lazy_sim() -> Iterator[RunningSimulator]:
    with run_in_thread(lazy(workers=1)) as sim:
        yield sim


@pytest.mark.anyio
async def test_stems_as_a_lazy_servers_first_job_run_on_its_base_model(
    lazy_sim: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing loaded yet is not "no base model": one stem goes there and loads its slots
    (base among them), the inventory is read again as soon as it is done, and the other
    stems follow; all on base, none with a warning, none failed."""
    caplog.set_level(logging.INFO)
    config = make_config(api={"backend": "acestep", "base_url": lazy_sim.base_url})
    audio = wav(tmp_path / "mine.wav")
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        made = await make_stems(runtime.service, str(audio), tracks=["vocals", "drums", "bass"])
        done = await wait_all(runtime, [e.job for e in made])
        state = pool_of(runtime).states()[0]
    assert [j.status for j in done] == [JobStatus.DONE] * 3, [j.reason for j in done]
    assert all(not j.warnings for j in done), [j.warnings for j in done]
    tasks = extracts(lazy_sim)
    assert len(tasks) == 3 and {t.params.model for t in tasks} == {BASE}
    first, *rest = tasks
    # The first job alone, until it was done: the others went by the fresh inventory.
    assert first.finished_at is not None
    assert all(t.created >= first.finished_at for t in rest)
    assert state.loaded_models == (TURBO, BASE) and not state.models_pending
    said = [r.getMessage() for r in caplog.records]
    assert any("has not loaded its models yet" in line for line in said), said
    assert any(f"has loaded its models now: {TURBO}, {BASE}" in line for line in said), said


@pytest.mark.anyio
async def test_a_lazy_server_without_a_base_model_runs_one_stem_and_fails_the_rest(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """Its slots are known only after its first job: that one stem runs on turbo and says
    so; the others are not sent (they would run on turbo too) and fail with the fix."""
    with run_in_thread(lazy(dit_models=TURBO, workers=1)) as sim:
        config = make_config(api={"backend": "acestep", "base_url": sim.base_url})
        audio = wav(tmp_path / "mine.wav")
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            made = await make_stems(runtime.service, str(audio), tracks=["vocals", "drums"])
            done = await wait_all(runtime, [e.job for e in made])
        sent = extracts(sim)
    ran = [j for j in done if j.status is JobStatus.DONE]
    failed = [j for j in done if j.status is JobStatus.FAILED]
    assert len(ran) == 1 and len(failed) == 1, [(j.status, j.reason) for j in done]
    assert any(w.startswith(f"ran on {TURBO} instead of {BASE}") for w in ran[0].warnings)
    reason = failed[0].reason or ""
    assert f"no server has {BASE} loaded (loaded: {sim.base_url}: {TURBO})" in reason
    assert "not loaded its models yet" not in reason
    assert len(sent) == 1  # only the one that had to find out


@pytest.mark.anyio
async def test_a_pool_waits_for_a_lazy_servers_first_job_without_holding_up_other_songs(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """A warm turbo-only server and a lazy one with base: stems go to the lazy one (one
    first, then the rest), while plain songs queued behind them go on meanwhile: they are
    all done while the lazy server's first (slow) stem still runs (it has room for that
    one only, so no plain song queues behind it there)."""
    with (
        run_in_thread(lazy(dit_models=TURBO, lazy_init=False, latency=0.05)) as warm,
        run_in_thread(lazy(workers=1, latency=5.0)) as cold,
    ):
        config = make_config(
            api={
                "backend": "acestep",
                "servers": [
                    {"url": warm.base_url, "max_in_flight": 1},
                    {"url": cold.base_url, "max_in_flight": 1},
                ],
            }
        )
        audio = wav(tmp_path / "mine.wav")
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            made = await make_stems(runtime.service, str(audio), tracks=["vocals", "drums", "bass"])
            songs = [
                await runtime.service.submit_file(
                    song(tmp_path, f"s{i}.txt", title=f"Plain {i}", model=TURBO)
                )
                for i in range(4)
            ]
            plain = await wait_all(runtime, songs)
            meanwhile = [t.finished_at is None for t in extracts(cold)]  # running now?
            httpx.post(cold.base_url + "/_sim/faults", json={"latency": 0.1})
            stems = await wait_all(runtime, [e.job for e in made])
        on_warm = list(warm.sim.tasks.values())
    assert [j.status for j in plain] == [JobStatus.DONE] * 4
    assert meanwhile == [True]  # its first stem alone, still loading and running
    assert [j.status for j in stems] == [JobStatus.DONE] * 3
    assert {j.server for j in stems} == {cold.base_url}
    assert all(not j.warnings for j in stems)
    assert not [t for t in on_warm if t.params.task_type == "extract"]
    first, *rest = extracts(cold)
    assert first.finished_at is not None and all(t.created >= first.finished_at for t in rest)


@pytest.mark.anyio
async def test_the_one_job_that_finds_out_is_given_back_when_it_does_not_go(
    lazy_sim: RunningSimulator, make_config: MakeConfig
) -> None:
    """A lazy server takes one job that needs a model at a time; when the job chosen does
    not go (a plugin, a full server), or never arrives there (the server stays idle a
    request timeout long), the next may: no job waits for one that is not coming."""
    config = make_config(
        api={
            "backend": "acestep",
            "timeout_seconds": 5,
            "servers": [{"url": lazy_sim.base_url, "max_in_flight": 4}],
        }
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        pool = pool_of(runtime)
        [state] = pool.states()
        with anyio.fail_after(20):
            while not state.models_pending:
                await anyio.sleep(0.02)
        url = lazy_sim.base_url
        first = pool.choose({}, model=BASE)
        second = pool.choose({}, model=BASE)
        plain = pool.choose({})  # songs that need no particular model still go
        pool.not_sent(url, None)  # a plain song not sent: the one finding out still is
        kept = pool.choose({}, model=BASE)
        pool.not_sent(url, BASE)
        again = pool.choose({}, model=BASE)
        assert state.probe_at is not None
        await pool.check(state)  # idle, but chosen just now: it may still be on its way
        within = state.probe_at
        state.probe_at -= 5  # chosen a request timeout ago, and the server is idle
        await pool.check(state)
        after = state.probe_at
    assert (first, second, plain, kept, again) == (url, None, url, None, url)
    assert within is not None and after is None and state.models_pending


@pytest.mark.anyio
async def test_status_and_models_say_a_lazy_server_has_not_loaded_its_models_yet(
    lazy_sim: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(
        api={"backend": "acestep", "servers": [{"url": lazy_sim.base_url, "max_in_flight": 1}]}
    )
    path = config.source_path or Path()
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        pool = pool_of(runtime)
        with anyio.fail_after(20):
            while not pool.states()[0].models_pending:
                await anyio.sleep(0.02)
        await pool.write_snapshot(force=True)
        status = cli(path, "status")
        status_json = json.loads(cli(path, "status", "--json").stdout)
        models = cli(path, "models")
        run_one(lazy_sim.base_url, {"prompt": "warm-up", "batch_size": 1})
        await pool.check(pool.states()[0])
        await pool.write_snapshot(force=True)
        warm_status = cli(path, "status")
        warm_models = cli(path, "models")
    assert "models not loaded yet (it loads them on its first job)" in status.stdout
    assert [s["models_pending"] for s in status_json["servers"]] == [True]
    assert "not initialised yet: it loads its configured models on its first job" in models.stdout
    assert "models not loaded yet" not in warm_status.stdout
    assert "not initialised yet" not in warm_models.stdout
    assert warm_status.returncode == warm_models.returncode == 0


@pytest.mark.anyio
async def test_a_lora_for_a_lazy_server_is_loaded_once_it_has_loaded_its_models(
    lazy_sim: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ "Model not initialized" is no failure and no hold: the server takes the one song
    that loads its models (without the LoRA), and the LoRA is loaded in the same check
    that finds the models loaded, once, with a log line for each step."""
    caplog.set_level(logging.INFO)
    folder = tmp_path / "loras" / "my-style"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}\n')
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [{"url": lazy_sim.base_url, "lora_path": str(folder)}],
        }
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        jobs = [
            await runtime.service.submit_file(
                song(tmp_path, f"l{i}.txt", title=f"LoRA {i}", model=TURBO)
            )
            for i in range(3)
        ]
        done = await wait_all(runtime, jobs)
        state = pool_of(runtime).states()[0]
    stats = httpx.get(lazy_sim.base_url + "/_sim/stats").json()
    assert [j.status for j in done] == [JobStatus.DONE] * 3
    assert state.lora_loaded is True and stats["lora_adapters"] == ["my-style"]
    assert stats["lora_loads"] == 1 and stats["lora_loaded_after"] == [1]
    said = [r.getMessage() for r in caplog.records]
    assert sum("LoRA my-style loaded from" in line for line in said) == 1
    order = [
        next(i for i, line in enumerate(said) if words in line)
        for words in (
            "has not loaded its models yet",
            "LoRA not loaded yet: the server loads its model on its first job",
            f"has loaded its models now: {TURBO}, {BASE}",
            "LoRA my-style loaded from",
        )
    ]
    assert order == sorted(order), said
