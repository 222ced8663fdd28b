"""ACE-Step impersonation, the worker queue, counters for tests and benchmarks, and the
ways to run the simulator (thread, `serve`, `python -m bygheartd.simulator`)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import httpx
import pytest
from test_simulator_support import query, simulator, submit, wait_final, wait_until

from bygheartd.simulator import CLI_OPTIONS, RUNTIME_FIELDS, SimulatorSettings, settings_from_cli

ACE_KEY = "test-key-123"


def test_acestep_mode_accepts_the_key_with_or_without_bearer_and_charges_nothing() -> None:
    with simulator(key=ACE_KEY, backend="acestep", api_key=ACE_KEY) as (_, client):
        entry = wait_final(client, submit(client))
        raw = httpx.post(
            f"{client.base_url}/query_result",
            json={"task_id_list": []},
            headers={"Authorization": ACE_KEY},
        )
        stats = client.get("/_sim/stats").json()
    assert entry["status"] == 1 and raw.status_code == 200
    assert stats["credits"] == {}


def test_acestep_mode_rejects_a_wrong_key() -> None:
    with simulator(key="bgh_looks_hosted", backend="acestep", api_key=ACE_KEY) as (_, client):
        reply = client.post("/release_task", json={"prompt": "x"})
    assert reply.status_code == 401 and reply.json() == {"detail": "Invalid API key"}


def test_acestep_mode_without_a_key_has_auth_off() -> None:
    with simulator(key=None, backend="acestep") as (_, client):
        assert client.post("/release_task", json={"prompt": "x"}).status_code == 200
        assert client.get("/v1/stats").status_code == 200


def test_acestep_models_list_names_the_turbo_model() -> None:
    with simulator(key=None, backend="acestep") as (_, client):
        models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["acestep/acestep-v15-turbo"]


def test_full_queue_answers_server_busy() -> None:
    with simulator(key=None, backend="acestep", workers=1, latency=30, queue_maxsize=1) as (
        handle,
        client,
    ):
        running = submit(client)
        wait_until(lambda: handle.sim.tasks[running].state == "running")
        waiting = client.post("/release_task", json={"prompt": "second"})
        refused = client.post("/release_task", json={"prompt": "third"})
    assert waiting.json()["data"]["queue_position"] == 1
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Server busy: queue is full"}


def test_workers_limit_how_many_tasks_run_at_once() -> None:
    with simulator(workers=2, latency=30) as (handle, client):
        ids = [submit(client) for _ in range(4)]
        wait_until(lambda: sum(handle.sim.tasks[i].state == "running" for i in ids) == 2)
        states = [handle.sim.tasks[i].state for i in ids]
    assert states == ["running", "running", "queued", "queued"]


def test_unlimited_workers_run_everything_at_once() -> None:
    with simulator(latency=30) as (handle, client):
        ids = [submit(client) for _ in range(6)]
        wait_until(lambda: all(handle.sim.tasks[i].state == "running" for i in ids))


def test_thinking_fails_when_the_lm_is_not_available() -> None:
    with simulator(lm_available=False) as (_, client):
        assert wait_final(client, submit(client, thinking=True))["status"] == 2
        assert wait_final(client, submit(client, thinking=False))["status"] == 1


def test_counters_track_submits_polls_downloads_and_statuses() -> None:
    with simulator() as (handle, client):
        task_id = submit(client)
        entry = wait_final(client, task_id)
        client.post("/query_result", json={"task_id_list": [task_id, "a", "b"]})
        body = client.get(entry["result"][0]["file"]).content
        stats = client.get("/_sim/stats").json()
    assert stats["submits"] == 1
    assert stats["polls"] >= 2 and stats["ids_per_poll"][-1] == 3
    assert stats["downloads"] == 1 and stats["download_bytes"] == len(body)
    assert stats["http_requests"]["/release_task"] == 1
    assert stats["status_codes"]["200"] >= 3
    assert handle.sim.stats.downloads == 1


def test_reset_clears_counters_and_optionally_the_ledger() -> None:
    with simulator() as (_, client):
        submit(client)
        after_reset = client.post("/_sim/reset").json()
        assert after_reset["submits"] == 0 and after_reset["credits"] != {}
        cleared = client.post("/_sim/reset", json={"ledger": True, "tasks": True}).json()
    assert cleared["credits"] == {} and cleared["tasks"]["total"] == 0


def test_cli_options_cover_every_setting_and_runtime_fields_are_settings() -> None:
    fields = {f.name for f in dataclasses.fields(SimulatorSettings)}
    assert {option.name for option in CLI_OPTIONS} == fields
    assert set(RUNTIME_FIELDS) <= fields


def test_settings_from_cli_ignores_none_and_accepts_dashes() -> None:
    settings = settings_from_cli(**{"latency": 0.5, "workers": None, "fail-marker": "X"})
    assert settings.latency == 0.5 and settings.workers is None and settings.fail_marker == "X"
    with pytest.raises(ValueError, match="file_form"):
        settings_from_cli(file_form="weird")


def test_settings_repr_never_shows_the_key() -> None:
    assert ACE_KEY not in repr(SimulatorSettings(backend="acestep", api_key=ACE_KEY))


def test_module_entry_point_prints_the_base_url_first_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd.simulator", "--port", "0", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        health = httpx.get(f"{base_url}/health", timeout=5)
        assert health.json()["data"]["status"] == "ok"
        stats = httpx.get(f"{base_url}/_sim/stats", timeout=5).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert "Traceback" not in err
    assert proc.returncode == 0
    assert out == ""  # nothing after the URL line: logs go to stderr
    assert not os.path.exists(stats["audio_dir"])


def test_old_finished_tasks_are_forgotten_past_max_tasks_kept_with_their_files() -> None:
    with simulator(max_tasks_kept=2) as (handle, client):
        oldest = wait_final(client, submit(client, prompt="one"))
        wait_final(client, submit(client, prompt="two"))
        wait_final(client, submit(client, prompt="three"))
        (entry,) = query(client, oldest["task_id"])
        audio_files = list(handle.sim.audio_dir.iterdir())
    assert entry["result"] == "[]"
    assert len(audio_files) == 2
