"""A server-level LoRA per pool server (issue 27 item 5): `[[api.servers]] lora_path` is
loaded once through the server's `/v1/lora/load` when the pool first finds it ready, again
only after the server forgot it (a restart), never per job; a path the server refuses keeps
that server out of the pool with the server's words; `status` and `models` show it. Against
simulated ACE-Step servers whose LoRA routes answer as the captured genuine ones."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _daemon import cli
from _jobs import song
from conftest import MakeConfig

from bygheartd.config import parse_config
from bygheartd.engine.pool import ServerPool
from bygheartd.errors import ConfigError
from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.simulator.server import run_in_thread

MODEL = "acestep-v15-turbo"


@pytest.fixture
def sims() -> Iterator[tuple[RunningSimulator, RunningSimulator]]:
    common: dict[str, Any] = {"backend": "acestep", "latency": 0.2, "audio_scale": 0.05}
    with (
        run_in_thread(SimulatorSettings(seed=1, **common)) as first,
        run_in_thread(SimulatorSettings(seed=2, **common)) as second,
    ):
        yield first, second


def adapter(tmp_path: Path, name: str = "my-style") -> Path:
    """A PEFT LoRA folder as the server expects one (its config file is what it checks)."""
    folder = tmp_path / "loras" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}\n')
    return folder


def sim_stats(sim: RunningSimulator) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(sim.base_url + "/_sim/stats").json()
    return reply


def warm_up(sim: RunningSimulator, headers: dict[str, str] | None = None) -> None:
    """One job straight on the server, so that it has loaded its model (it loads lazily)."""
    task = httpx.post(
        sim.base_url + "/release_task",
        json={"prompt": "warm-up", "batch_size": 1},
        headers=headers,
    ).json()["data"]["task_id"]
    for _ in range(200):
        [entry] = httpx.post(
            sim.base_url + "/query_result", json={"task_id_list": [task]}, headers=headers
        ).json()["data"]
        if entry["status"] != 0:
            return
        time.sleep(0.02)
    raise AssertionError("the warm-up job never finished")


async def until(predicate: Any, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)


async def make(runtime: Runtime, folder: Path, n: int, start: int = 0) -> list[Job]:
    jobs = [
        await runtime.service.submit_file(
            song(folder, f"lora{i}.txt", title=f"LoRA song {i}", model=MODEL)
        )
        for i in range(start, start + n)
    ]
    return [await runtime.service.wait(j.id, timeout=60, interval=0.05) for j in jobs]


def pool_of(runtime: Runtime) -> ServerPool:
    assert runtime.engine is not None
    return runtime.engine.parts.pool


# -- configuration ----------------------------------------------------------------------


def test_lora_path_is_a_per_server_key_of_the_pool() -> None:
    config = parse_config(
        {
            "api": {
                "backend": "acestep",
                "servers": [
                    {"url": "http://gpu1:8001", "lora_path": "  /srv/loras/my-style  "},
                    {"url": "http://gpu2:8001"},
                ],
            }
        }
    )
    assert [s.lora_path for s in config.api.servers] == ["/srv/loras/my-style", ""]
    with pytest.raises(ConfigError, match="lora_path"):
        parse_config(
            {
                "api": {
                    "backend": "acestep",
                    "servers": [{"url": "http://gpu1:8001", "lora_path": "/srv/a\nb"}],
                }
            }
        )
    example = (Path(__file__).parents[1] / "config.example.toml").read_text()
    assert "# lora_path = " in example


def test_config_check_lists_each_servers_lora(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text(
        '[api]\nbackend = "acestep"\n'
        '[[api.servers]]\nurl = "http://127.0.0.1:9"\nlora_path = "/srv/loras/my-style"\n'
        '[[api.servers]]\nurl = "http://127.0.0.1:10"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(config), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "http://127.0.0.1:9: max_in_flight 2, key from" in done.stdout
    assert "LoRA /srv/loras/my-style (on that server)" in done.stdout
    assert done.stdout.count("LoRA") == 1


# -- the pool -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_lora_is_loaded_once_when_ready_and_again_after_a_restart(
    sims: tuple[RunningSimulator, RunningSimulator],
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lazily loading server answers "Model not initialized" until its first job: it still
    takes that one job (nothing else would load its model), and its LoRA is loaded as soon as
    it is done, once; twelve more songs load nothing more; a restart forgets it and it is
    loaded again."""
    caplog.set_level(logging.INFO)
    with_lora, plain = sims
    folder = adapter(tmp_path)
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [
                {"url": with_lora.base_url, "lora_path": str(folder)},
                {"url": plain.base_url},
            ],
        }
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        pool = pool_of(runtime)

        async def waits_for_its_model() -> bool:
            state = pool.state(with_lora.base_url)
            return state is not None and state.lora_note is not None

        await until(waits_for_its_model)
        await pool.write_snapshot(force=True)
        shown = cli(config.source_path or Path(), "status").stdout
        first = await make(runtime, tmp_path, 4)

        async def loaded() -> bool:
            return sim_stats(with_lora)["lora_adapters"] == ["my-style"]

        await until(loaded)
        more = await make(runtime, tmp_path, 12, start=4)
        after_many = sim_stats(with_lora)
        state = pool.state(with_lora.base_url)
        assert state is not None and state.lora_loaded is True
        await pool.write_snapshot(force=True)
        status = json.loads(cli(config.source_path or Path(), "status", "--json").stdout)
        status_text = cli(config.source_path or Path(), "status").stdout

        httpx.post(with_lora.base_url + "/_sim/restart")
        warm_up(with_lora)
        assert sim_stats(with_lora)["lora_adapters"] == []
        assert await pool.check(state)
        again = sim_stats(with_lora)
    assert all(j.status is JobStatus.DONE for j in first + more), [j.reason for j in more]
    assert {j.server for j in first + more} == {with_lora.base_url, plain.base_url}
    assert "LoRA " + str(folder) + " not loaded yet" in shown
    assert after_many["lora_loads"] == 1  # once, not per job
    # While it waited for the model, the server took one song only: the one that loaded it.
    assert after_many["lora_loaded_after"] == [1] and after_many["submits"] > 1
    assert sim_stats(plain)["lora_loads"] == 0 and sim_stats(plain)["lora_adapters"] == []
    lora = {s["url"]: s["lora"] for s in status["servers"]}
    assert lora[with_lora.base_url] == {"path": str(folder), "loaded": True, "note": None}
    assert lora[plain.base_url] is None
    assert f"LoRA {folder} loaded" in status_text
    assert again["lora_loads"] == 2 and again["lora_adapters"] == ["my-style"]
    said = [r.getMessage() for r in caplog.records]
    assert sum("LoRA my-style loaded from" in line for line in said) == 2
    assert any("no longer lists its LoRA my-style (restarted?)" in line for line in said)


@pytest.mark.anyio
async def test_a_ready_server_gets_no_song_before_its_lora_is_loaded(
    sims: tuple[RunningSimulator, RunningSimulator], make_config: MakeConfig, tmp_path: Path
) -> None:
    """Songs queued the moment the engine starts: the server with a LoRA takes its first
    one only after the load (its only task before it is the warm-up)."""
    with_lora, plain = sims
    warm_up(with_lora)
    folder = adapter(tmp_path)
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [
                {"url": with_lora.base_url, "lora_path": str(folder)},
                {"url": plain.base_url},
            ],
        }
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        done = await make(runtime, tmp_path, 6)
    stats = sim_stats(with_lora)
    assert all(j.status is JobStatus.DONE for j in done)
    assert with_lora.base_url in {j.server for j in done}
    assert stats["lora_loaded_after"] == [1] and stats["submits"] > 1


@pytest.mark.anyio
async def test_a_reload_with_a_new_lora_path_loads_it_at_once(
    sims: tuple[RunningSimulator, RunningSimulator],
    make_config: MakeConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new `lora_path` (SIGHUP) is loaded at the next tick, not at the next 30 s check,
    and is not taken for a restart; the old adapter stays (bygheartd never unloads one)."""
    caplog.set_level(logging.INFO)
    with_lora, plain = sims
    warm_up(with_lora)
    first, second = adapter(tmp_path, "first-style"), adapter(tmp_path, "second-style")

    def config_with(folder: Path) -> Any:
        servers = [{"url": with_lora.base_url, "lora_path": str(folder)}, {"url": plain.base_url}]
        return make_config(api={"backend": "acestep", "servers": servers})

    async with Runtime(config_with(first), role=EngineRole.MCP) as runtime:

        async def has(names: list[str]) -> bool:
            return sim_stats(with_lora)["lora_adapters"] == names

        await until(lambda: has(["first-style"]))
        await runtime.reload(config_with(second), plugins_changed=False)
        await until(lambda: has(["first-style", "second-style"]), timeout=10)
        done = await make(runtime, tmp_path, 3)
    assert all(j.status is JobStatus.DONE for j in done)
    assert not any("no longer lists" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_lora_path_the_server_refuses_keeps_that_server_out_until_it_loads(
    sims: tuple[RunningSimulator, RunningSimulator], make_config: MakeConfig, tmp_path: Path
) -> None:
    refusing, plain = sims
    warm_up(refusing)
    missing = tmp_path / "loras" / "not-there"
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [
                {"url": refusing.base_url, "lora_path": str(missing)},
                {"url": plain.base_url},
            ],
        },
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        pool = pool_of(runtime)

        async def refused() -> bool:
            state = pool.state(refusing.base_url)
            return state is not None and state.lora_loaded is False

        await until(refused)
        first = await make(runtime, tmp_path, 3)
        state = pool.state(refusing.base_url)
        assert state is not None
        reason = state.reason or ""
        await pool.write_snapshot(force=True)
        shown = cli(config.source_path or Path(), "status").stdout
        adapter(tmp_path, "not-there")

        async def back() -> bool:
            found = pool.state(refusing.base_url)
            return found is not None and found.healthy and found.lora_loaded is True

        await until(back)
        second = await make(runtime, tmp_path, 4, start=3)
    assert all(j.status is JobStatus.DONE for j in first + second)
    assert {j.server for j in first} == {plain.base_url}
    assert f"❌ LoRA path not found: {missing}" in reason
    assert "fix lora_path in the [[api.servers]] entry of" in reason
    assert f"{refusing.base_url}: DOWN: its LoRA" in shown
    assert refusing.base_url in {j.server for j in second}
    assert sim_stats(refusing)["lora_adapters"] == ["not-there"]


def test_models_shows_each_servers_lora(
    sims: tuple[RunningSimulator, RunningSimulator], make_config: MakeConfig, tmp_path: Path
) -> None:
    with_lora, plain = sims
    folder = adapter(tmp_path)
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [
                {"url": with_lora.base_url, "lora_path": str(folder)},
                {"url": plain.base_url},
            ],
        }
    )
    source = config.source_path or Path()
    before = cli(source, "models").stdout
    warm_up(with_lora)
    warm_up(plain)
    httpx.post(with_lora.base_url + "/v1/lora/load", json={"lora_path": str(folder)})
    after = json.loads(cli(source, "models", "--json").stdout)
    text = cli(source, "models").stdout
    assert "state not read: the server has not loaded its model yet" in before
    records = {r["url"]: r["lora"] for r in after["servers"]}
    assert records[with_lora.base_url]["path"] == str(folder)
    assert records[with_lora.base_url]["loaded"] is True
    assert records[with_lora.base_url]["status"]["adapters"] == ["my-style"]
    assert records[plain.base_url]["path"] is None
    assert records[plain.base_url]["status"]["adapters"] == []
    assert f"LoRA: {folder} (configured), loaded; adapters loaded on the server: my-style" in text
    assert "LoRA: none configured; adapters loaded on the server: none" in text


# -- the simulator's LoRA routes, as the genuine server answers ---------------------------


def test_the_simulators_lora_routes_answer_as_the_captured_server(tmp_path: Path) -> None:
    folder = adapter(tmp_path)
    not_adapter = tmp_path / "not_an_adapter"
    not_adapter.mkdir()
    lokr = tmp_path / "style.safetensors"
    lokr.write_bytes(b"\0" * 16)
    settings = SimulatorSettings(backend="acestep", api_key="test-key-123", latency=0.05)
    key = {"Authorization": "Bearer test-key-123"}
    with run_in_thread(settings) as sim:
        base = sim.base_url
        cold = httpx.get(base + "/v1/lora/status", headers=key)
        no_key = httpx.post(base + "/v1/lora/load", json={"lora_path": "/nonexistent/adapter"})
        no_path = httpx.post(base + "/v1/lora/load", json={"adapter_name": "x"}, headers=key)
        warm_up(sim, key)  # its first job loads its model
        empty = httpx.get(base + "/v1/lora/status", headers=key)
        not_found = httpx.post(
            base + "/v1/lora/load", json={"lora_path": "/nonexistent/adapter"}, headers=key
        )
        invalid = httpx.post(
            base + "/v1/lora/load",
            json={"lora_path": str(not_adapter), "adapter_name": "mine"},
            headers=key,
        )
        nothing = httpx.post(base + "/v1/lora/unload", json={}, headers=key)
        loaded = httpx.post(base + "/v1/lora/load", json={"lora_path": str(folder)}, headers=key)
        twice = httpx.post(base + "/v1/lora/load", json={"lora_path": str(folder)}, headers=key)
        kr = httpx.post(base + "/v1/lora/load", json={"lora_path": str(lokr)}, headers=key)
        status = httpx.get(base + "/v1/lora/status", headers=key)
        unloaded = httpx.post(base + "/v1/lora/unload", json={}, headers=key)
    with run_in_thread(SimulatorSettings(latency=0.05)) as hosted:
        hidden = httpx.get(hosted.base_url + "/v1/lora/status")
    # R1-4, R1-18, R1-17
    assert (cold.status_code, cold.json()) == (500, {"detail": "Model not initialized"})
    assert (no_key.status_code, no_key.json()) == (401, {"detail": "Missing Authorization header"})
    assert no_path.status_code == 422
    assert no_path.json()["detail"][0]["loc"] == ["body", "lora_path"]
    # R1-12: the captured shape, key for key
    assert empty.json()["data"] == {
        "lora_loaded": False,
        "use_lora": False,
        "lora_scale": 1.0,
        "adapter_type": None,
        "scales": {},
        "active_adapter": None,
        "adapters": [],
        "synthetic_default_mode": False,
    }
    # R1-15, R1-16, R1-19
    assert (not_found.status_code, not_found.json()) == (
        400,
        {"detail": "❌ LoRA path not found: /nonexistent/adapter"},
    )
    assert invalid.status_code == 400
    assert invalid.json()["detail"] == (
        "❌ Invalid adapter: expected PEFT LoRA directory containing adapter_config.json or "
        f"LoKr artifact lokr_weights.safetensors in {not_adapter}"
    )
    assert nothing.json()["data"] == {"message": "⚠️ No LoRA adapter loaded."}
    assert loaded.json()["data"] == {
        "message": f"✅ LoRA 'my-style' loaded from {folder}",
        "lora_path": str(folder),
    }
    assert twice.status_code == 400 and "already in use" in twice.json()["detail"]
    assert kr.json()["data"]["message"] == f"✅ LoKr loaded from {lokr}"
    assert status.json()["data"]["adapters"] == ["my-style", "style.safetensors"]
    assert status.json()["data"]["lora_loaded"] is True
    assert unloaded.json()["data"] == {"message": "✅ LoRA unloaded, using base model"}
    assert hidden.status_code == 404
