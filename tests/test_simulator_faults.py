"""Each injected fault does what it promises, from start-up settings or at run time via
POST /_sim/faults, and runs out after its burst."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest
from test_simulator_support import (
    PRO_KEY,
    first_file,
    query,
    simulator,
    submit,
    wait_final,
    wait_until,
)

from bygheartd.simulator import key_label


def _poll(client: httpx.Client) -> httpx.Response:
    return client.post("/query_result", json={"task_id_list": []})


def test_rate_limit_burst_answers_429_with_retry_after_then_recovers() -> None:
    with simulator(rate_limit_burst=2, retry_after=7) as (handle, client):
        replies = [_poll(client) for _ in range(3)]
    assert [r.status_code for r in replies] == [429, 429, 200]
    assert replies[0].headers["retry-after"] == "7"
    assert handle.sim.stats.faults_fired["rate_limit"] == 2


def test_retry_after_can_be_an_http_date() -> None:
    with simulator(rate_limit_burst=1, retry_after=120, retry_after_http_date=True) as (_, client):
        reply = _poll(client)
    when = email.utils.parsedate_to_datetime(reply.headers["retry-after"])
    assert 100 < when.timestamp() - time.time() < 140


def test_bursts_leave_health_and_admin_alone() -> None:
    with simulator(rate_limit_burst=1) as (_, client):
        assert client.get("/health").status_code == 200
        assert client.get("/_sim/stats").status_code == 200
        assert _poll(client).status_code == 429


@pytest.mark.parametrize("status", [502, 503, 504])
def test_error_burst_answers_a_gateway_page(status: int) -> None:
    with simulator(error_burst=1, error_status=status) as (_, client):
        first, second = _poll(client), _poll(client)
    assert first.status_code == status
    assert first.headers["content-type"] == "text/html"
    assert second.status_code == 200


def test_envelope_error_is_http_200_with_code_500_inside() -> None:
    with simulator(envelope_error_burst=1) as (handle, client):
        reply = client.post("/release_task", json={"prompt": "x"})
        after = client.post("/release_task", json={"prompt": "x"})
    body = reply.json()
    assert reply.status_code == 200 and body["code"] == 500
    assert body["data"] is None and isinstance(body["error"], str) and body["error"]
    assert after.json()["code"] == 200
    assert handle.sim.stats.submits == 1


def test_dropped_download_closes_mid_body_and_the_next_one_completes() -> None:
    with simulator() as (handle, client):
        file = first_file(client)
        handle.set_faults(drop_download_burst=1, drop_download_after_bytes=100)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(file)
        again = client.get(file)
    assert again.status_code == 200 and len(again.content) > 100
    assert handle.sim.stats.faults_fired["drop_download"] == 1


def test_slow_reply_delays_job_requests() -> None:
    with simulator(slow_reply_seconds=0.3) as (_, client):
        started = time.monotonic()
        _poll(client)
        slow = time.monotonic() - started
        started = time.monotonic()
        client.get("/health")
        fast = time.monotonic() - started
    assert slow >= 0.3 and fast < 0.3


def test_failure_rate_one_fails_every_task_and_refunds() -> None:
    with simulator(failure_rate=1.0) as (_, client):
        entry = wait_final(client, submit(client))
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
    assert entry["status"] == 2 and ledger["used_today"] == 0


def test_fail_marker_can_be_changed_at_run_time() -> None:
    with simulator() as (_, client):
        reply = client.post("/_sim/faults", json={"fail_marker": "BOOM"})
        assert reply.status_code == 200 and reply.json()["fail_marker"] == "BOOM"
        boom = wait_final(client, submit(client, prompt="go BOOM"))
        fail = wait_final(client, submit(client, prompt="FAIL is fine now"))
    assert boom["status"] == 2 and fail["status"] == 1


def test_forget_rate_one_loses_tasks_when_they_would_finish() -> None:
    with simulator(forget_rate=1.0) as (handle, client):
        task_id = submit(client)
        wait_until(lambda: task_id not in handle.sim.tasks)
        (entry,) = query(client, task_id)
    assert entry == {"task_id": task_id, "result": "[]", "status": 0}
    assert handle.sim.stats.forgotten == 1


def test_admin_forget_loses_named_tasks() -> None:
    with simulator(latency=5) as (_, client):
        kept, lost = submit(client), submit(client)
        assert client.post("/_sim/forget", json={"task_ids": [lost]}).json() == {"forgotten": 1}
        entries = query(client, kept, lost)
    assert entries[0]["result"] != "[]" and entries[1]["result"] == "[]"


def test_lost_submit_reply_creates_and_charges_the_task_but_drops_the_connection() -> None:
    with simulator(lose_submit_reply=1) as (handle, client):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/release_task", json={"prompt": "x", "batch_size": 1})
        tasks = client.get("/_sim/tasks").json()["tasks"]
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
        assert client.post("/release_task", json={"prompt": "y"}).status_code == 200
    assert len(tasks) == 1 and ledger["used_today"] == 2
    assert handle.sim.stats.submits == 2


def test_server_error_on_submit_is_plain_500_and_creates_nothing() -> None:
    with simulator(server_error_on_submit=1) as (handle, client):
        reply = client.post("/release_task", json={"prompt": "x"})
        stats = client.get("/_sim/stats").json()
    assert reply.status_code == 500 and reply.text == "Internal Server Error"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert stats["submits"] == 0 and stats["credits"] == {}
    assert handle.sim.stats.faults_fired["server_error_on_submit"] == 1


def test_faults_endpoint_rejects_unknown_names_and_bad_values() -> None:
    with simulator() as (_, client):
        unknown = client.post("/_sim/faults", json={"explode": True})
        bad = client.post("/_sim/faults", json={"failure_rate": 3})
        current = client.get("/_sim/faults").json()
    assert unknown.status_code == 400 and "explode" in unknown.json()["detail"]
    assert bad.status_code == 400 and "failure_rate" in bad.json()["detail"]
    assert current["failure_rate"] == 0.0 and current["fail_marker"] == "FAIL"


def test_task_unfinished_after_the_timeout_reports_failed() -> None:
    with simulator(latency=30, task_timeout_seconds=0.2) as (_, client):
        task_id = submit(client)
        entry = wait_final(client, task_id)
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
    assert entry["status"] == 2 and ledger["used_today"] == 0


def test_restart_keeps_finished_freezes_running_and_forgets_queued() -> None:
    with simulator(workers=1) as (handle, client):
        done = submit(client)
        wait_final(client, done)
        client.post("/_sim/faults", json={"latency": 30})
        running = submit(client)
        wait_until(lambda: handle.sim.tasks[running].state == "running")
        queued = submit(client)
        assert client.post("/_sim/restart").json() == {"frozen": 1, "kept": 2}
        entries = query(client, done, running, queued)
    assert entries[0]["status"] == 1
    assert entries[1]["status"] == 0 and json.loads(entries[1]["result"])[0]["stage"] == "running"
    assert entries[2] == {"task_id": queued, "result": "[]", "status": 0}
    assert entries[0]["progress_text"] == "INFO:     Uvicorn running on " + (
        handle.base_url.removeprefix("http://").join(["http://", " (Press CTRL+C to quit)"])
    )
