"""The simulator speaks API.md as the real server does: envelopes, result shapes, batch
polls, unknown ids, body parsing errors, keys, plans and credits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from test_simulator_support import (
    FAILED_KEYS,
    FREE_KEY,
    META_KEYS,
    PRO_KEY,
    QUEUED_KEYS,
    RUNNING_KEYS,
    SUCCEEDED_KEYS,
    ULT_KEY,
    query,
    simulator,
    submit,
    wait_final,
    wait_until,
)

from bygheartd.simulator import key_label


def test_health_is_enveloped_and_needs_no_key() -> None:
    with simulator(key=None) as (_, client):
        reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.text.startswith('{"data":{"status":"ok","service":"ACE-Step API","version":"1.0"')
    body = reply.json()
    assert list(body) == ["data", "code", "error", "timestamp", "extra"]
    assert body["code"] == 200 and body["error"] is None and body["extra"] is None
    assert body["data"]["models_initialized"] is False


def test_submit_reply_is_queued_with_a_position() -> None:
    with simulator() as (_, client):
        reply = client.post("/release_task", json={"prompt": "x", "batch_size": 1})
    data = reply.json()["data"]
    assert list(data) == ["task_id", "status", "queue_position"]
    assert data["status"] == "queued" and data["queue_position"] == 1


def test_queued_and_running_entries_have_the_transcript_key_sets() -> None:
    with simulator(workers=1, latency=5) as (handle, client):
        running = submit(client)
        wait_until(lambda: handle.sim.tasks[running].state == "running")
        queued = submit(client)
        entries = query(client, running, queued)
    assert [e["task_id"] for e in entries] == [running, queued]
    run_el = json.loads(entries[0]["result"])[0]
    queue_el = json.loads(entries[1]["result"])[0]
    assert list(run_el) == RUNNING_KEYS and run_el["stage"] == "running"
    assert 0 < run_el["progress"] < 1
    assert list(queue_el) == QUEUED_KEYS
    assert queue_el | {"create_time": 0} == {
        "file": "", "wave": "", "status": 0, "create_time": 0, "env": "development",
        "prompt": "", "lyrics": "", "metas": {}, "progress": 0.0, "stage": "queued",
        "error": None,
    }  # fmt: skip


def test_result_is_a_json_string_in_python_default_formatting() -> None:
    with simulator() as (_, client):
        task_id = submit(client)
        (entry,) = query(client, task_id)
    assert isinstance(entry["result"], str)
    assert entry["result"].startswith('[{"file": "", "wave": "", "status": 0, ')
    assert entry["result"] == json.dumps(json.loads(entry["result"]), ensure_ascii=False)


def test_succeeded_elements_carry_metas_seeds_and_models() -> None:
    with simulator() as (_, client):
        task_id = submit(
            client, prompt="upbeat synthwave", lyrics="[verse]\nneon", audio_duration=30, bpm=120
        )
        entry = wait_final(client, task_id)
    assert list(entry) == ["task_id", "result", "status", "progress_text"]
    assert entry["status"] == 1
    (element,) = entry["result"]
    assert list(element) == SUCCEEDED_KEYS
    assert list(element["metas"]) == META_KEYS
    assert element["metas"]["duration"] == 30.0 and element["metas"]["bpm"] == 120
    assert element["metas"]["keyscale"] == "N/A" and element["metas"]["genres"] == "N/A"
    assert element["prompt"] == "upbeat synthwave" and element["lyrics"] == "[verse]\nneon"
    assert element["lm_model"] == "acestep-5Hz-lm-0.6B"
    assert element["dit_model"] == "acestep-v15-turbo"
    assert element["progress"] == 1.0 and element["stage"] == "succeeded"
    assert element["file"].startswith("/v1/audio?path=%2F")
    assert "Total generation time (1 song)" in element["generation_info"]


def test_failed_task_reports_status_2_without_a_reason() -> None:
    with simulator() as (_, client):
        entry = wait_final(client, submit(client, prompt="please FAIL this one"))
    assert entry["status"] == 2
    assert entry["result"] == [
        {
            "file": "",
            "wave": "",
            "status": 2,
            "create_time": entry["result"][0]["create_time"],
            "env": "development",
            "progress": 0.0,
            "stage": "failed",
        }
    ]
    assert list(entry["result"][0]) == FAILED_KEYS


def test_unknown_id_looks_queued_with_no_progress_text() -> None:
    with simulator() as (_, client):
        (entry,) = query(client, "00000000-0000-0000-0000-000000000000")
    assert entry == {"task_id": "00000000-0000-0000-0000-000000000000", "result": "[]", "status": 0}


def test_batch_poll_answers_every_id_in_request_order_with_one_progress_text() -> None:
    with simulator() as (_, client):
        ids = [submit(client, prompt=f"song {n}") for n in range(5)]
        asked = [*reversed(ids), "unknown-id"]
        entries = query(client, *asked)
    assert [e["task_id"] for e in entries] == asked
    assert len({e["progress_text"] for e in entries[:-1]}) == 1


def test_empty_or_missing_task_id_list_gives_empty_data() -> None:
    with simulator() as (_, client):
        assert client.post("/query_result", json={"task_id_list": []}).json()["data"] == []
        assert client.post("/query_result", json={}).json()["data"] == []


def test_form_urlencoded_poll_with_a_json_string_list_works() -> None:
    with simulator() as (_, client):
        task_id = submit(client)
        reply = client.post("/query_result", data={"task_id_list": json.dumps([task_id])})
    assert reply.json()["data"][0]["task_id"] == task_id


@pytest.mark.parametrize(
    ("content", "content_type", "status", "detail"),
    [
        (b'{"prompt": ', "application/json", 400, "Malformed JSON payload"),
        (b"[1,2]", "application/json", 400, "JSON payload must be an object"),
        (b"prompt is x", "text/plain", 415, None),
    ],
)
def test_bad_submit_bodies_are_rejected(
    content: bytes, content_type: str, status: int, detail: str | None
) -> None:
    with simulator() as (_, client):
        reply = client.post(
            "/release_task", content=content, headers={"Content-Type": content_type}
        )
    assert reply.status_code == status
    if detail:
        assert reply.json() == {"detail": detail}


def test_absolute_source_path_is_a_400() -> None:
    with simulator() as (_, client):
        body = {"prompt": "x", "task_type": "cover", "src_audio_path": "/etc/hosts"}
        reply = client.post("/release_task", json=body)
    assert reply.status_code == 400
    assert reply.json() == {"detail": "absolute audio file paths are not allowed"}


def test_invalid_strict_field_is_an_opaque_plain_500() -> None:
    with simulator() as (handle, client):
        reply = client.post("/release_task", json={"prompt": "x", "repaint_mode": "wild"})
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.text == "Internal Server Error"
    assert handle.sim.stats.submits == 0


def test_multipart_submit_with_source_audio_succeeds() -> None:
    with simulator() as (handle, client):
        reply = client.post(
            "/release_task",
            data={"prompt": "cover me", "task_type": "cover", "batch_size": "1"},
            files={"src_audio": ("take.wav", b"RIFF0000WAVEfmt ", "audio/wav")},
        )
        assert reply.status_code == 200, reply.text
        entry = wait_final(client, reply.json()["data"]["task_id"])
    assert entry["status"] == 1 and len(entry["result"]) == 1
    assert handle.sim.stats.uploads == 1


def test_batch_size_defaults_to_two_outputs() -> None:
    with simulator() as (_, client):
        reply = client.post("/release_task", json={"prompt": "two takes please"})
        entry = wait_final(client, reply.json()["data"]["task_id"])
    assert len(entry["result"]) == 2
    seeds = entry["result"][0]["seed_value"].split(",")
    assert len(seeds) == 2 and all(el["seed_value"] == ",".join(seeds) for el in entry["result"])


def test_fixed_seeds_are_echoed_and_identical_requests_share_file_names() -> None:
    body = {"prompt": "jazz trio", "seed": "1,2", "use_random_seed": False, "batch_size": 2}
    with simulator() as (_, client):
        first = wait_final(client, submit(client, **body))
        second = wait_final(client, submit(client, **body))
    assert first["result"][0]["seed_value"] == "1,2"
    assert [e["file"] for e in first["result"]] == [e["file"] for e in second["result"]]
    assert first["result"][0]["file"] != first["result"][1]["file"]


def test_random_seeds_give_distinct_files() -> None:
    with simulator() as (_, client):
        first = wait_final(client, submit(client, prompt="same"))
        second = wait_final(client, submit(client, prompt="same"))
    assert first["result"][0]["file"] != second["result"][0]["file"]


def test_same_seed_setting_reproduces_random_seeds_but_never_task_ids() -> None:
    with simulator(seed=42) as (_, client):
        first = wait_final(client, submit(client))
    with simulator(seed=42) as (_, client):
        second = wait_final(client, submit(client))
    assert first["result"][0]["seed_value"] == second["result"][0]["seed_value"]
    assert first["task_id"] != second["task_id"]


# ----- keys and plans --------------------------------------------------------------------
def test_missing_key_is_401_with_the_job_endpoint_message() -> None:
    with simulator(key=None) as (_, client):
        reply = client.post("/release_task", json={"prompt": "x"})
        stats = client.get("/v1/stats")
    assert reply.status_code == 401
    assert reply.json() == {"detail": "Missing ai_token or Authorization header"}
    assert stats.json() == {"detail": "Missing Authorization header"}


def test_non_bgh_key_is_401_invalid_api_key() -> None:
    with simulator(key="sk-something-else") as (_, client):
        reply = client.post("/query_result", json={"task_id_list": []})
    assert reply.status_code == 401 and reply.json() == {"detail": "Invalid API key"}


def test_wrong_body_ai_token_wins_over_a_good_header() -> None:
    with simulator() as (_, client):
        reply = client.post("/release_task", json={"prompt": "x", "ai_token": "nope"})
    assert reply.status_code == 401 and reply.json() == {"detail": "Invalid ai_token"}


def test_body_ai_token_alone_is_accepted() -> None:
    with simulator(key=None) as (_, client):
        reply = client.post("/release_task", json={"prompt": "x", "ai_token": PRO_KEY})
    assert reply.status_code == 200


def test_free_key_is_403_pro_tier_required() -> None:
    with simulator(key=FREE_KEY) as (_, client):
        reply = client.post("/release_task", json={"prompt": "x"})
    assert reply.status_code == 403
    body = reply.json()
    assert body["error"] == "pro_tier_required" and "Upgrade" in body["message"]


def _seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def test_pro_key_over_the_daily_cap_gets_429_until_midnight_utc() -> None:
    with simulator() as (handle, client):
        for _ in range(7):  # 7 x 4 = 28 credits
            submit(client, model="bygheart-studio-max", batch_size=1)
        reply = client.post(
            "/release_task", json={"prompt": "x", "model": "bygheart-studio-max", "batch_size": 1}
        )
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
    assert reply.status_code == 429
    assert reply.json()["error"] == "credit_limit_reached"
    assert abs(int(reply.headers["retry-after"]) - _seconds_to_midnight()) < 5
    assert ledger["used_today"] == 28 and ledger["plan"] == "pro"
    assert handle.sim.stats.submits == 7


def test_cost_is_model_credits_times_batch_size_and_unknown_models_cost_the_default() -> None:
    with simulator() as (_, client):
        submit(client, model="bygheart-melody-fast", batch_size=3)
        submit(client, model="no-such-model", batch_size=2)
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
    assert ledger["used_today"] == 3 * 1 + 2 * 2


def test_monthly_credits_exhausted_is_a_429_too() -> None:
    with simulator(monthly_credits=4) as (_, client):
        submit(client, batch_size=2)
        reply = client.post("/release_task", json={"prompt": "x", "batch_size": 1})
    assert reply.status_code == 429
    assert reply.json()["scope"] == "monthly"
    assert int(reply.headers["retry-after"]) > 0


def test_ultimate_key_has_no_cap() -> None:
    with simulator(key=ULT_KEY) as (_, client):
        for _ in range(3):
            submit(client, model="bygheart-studio-max", batch_size=8)
        ledger = client.get("/_sim/stats").json()["credits"][key_label(ULT_KEY)]
    assert ledger["used_today"] == 96 and ledger["plan"] == "ultimate"


def test_failed_generations_are_refunded() -> None:
    with simulator() as (_, client):
        entry = wait_final(client, submit(client, prompt="FAIL", batch_size=2))
        ledger = client.get("/_sim/stats").json()["credits"][key_label(PRO_KEY)]
    assert entry["status"] == 2
    assert ledger["used_today"] == 0 and ledger["refunded_total"] == 4


def test_stats_and_models_endpoints_have_the_acestep_shapes() -> None:
    with simulator() as (_, client):
        wait_final(client, submit(client))
        stats = client.get("/v1/stats").json()["data"]
        models = httpx.get(f"{client.base_url}/v1/models").json()
    assert list(stats) == ["jobs", "queue_size", "queue_maxsize", "avg_job_seconds"]
    assert stats["jobs"] == {"total": 1, "queued": 0, "running": 0, "succeeded": 1, "failed": 0}
    assert stats["queue_maxsize"] == 200
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} >= {"bygheart/bygheart-studio-pro"}


def test_unknown_paths_and_wrong_methods_answer_fastapi_style_json() -> None:
    with simulator() as (handle, client):
        missing = client.get("/nope")
        wrong = client.get("/release_task")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}
    assert handle.sim.stats.http_requests["(other)"] == 1
