"""BygheartClient against a real HTTP server on 127.0.0.1: envelopes, transcript replies,
error classification, the submit retry rules and key secrecy."""

from __future__ import annotations

import email.utils
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    ok,
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import (
    PREFIX,
    TASK_A,
    TASK_B,
    TASK_C,
    TASK_UNKNOWN,
    TRANSCRIPT,
    RawServer,
    Reply,
    ScriptedApi,
    closed_port,
    envelope,
)

from bygheartd.api.client import (
    ApiError,
    AuthError,
    BygheartClient,
    PlanError,
    ProtocolError,
    RateLimited,
    RejectedError,
    RetryPolicy,
    Submitted,
    TaskState,
    TransientError,
)
from bygheartd.api.errors import parse_retry_after
from bygheartd.errors import BygheartdError

pytestmark = pytest.mark.anyio

KEY = "bgh_SECRET_do_not_leak_7f3a9c"
SUBMIT_BODY = {"prompt": "upbeat synthwave, female vocals", "batch_size": 1, "audio_format": "mp3"}


@pytest.fixture
def base_url(origin: str) -> str:
    return origin + PREFIX


def make_client(base_url: str, **kwargs: Any) -> BygheartClient:
    return scripted_client(base_url, kwargs.pop("api_key", KEY), **kwargs)


# -- submit ---------------------------------------------------------------------------


async def test_submit_posts_json_under_the_base_path_with_bearer_key(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    async with make_client(base_url) as client:
        submitted = await client.submit(SUBMIT_BODY)
    assert submitted == Submitted(task_id=TASK_A, queue_position=1)
    [call] = api.requests
    assert call.path == "/bygheartsong/api/release_task"
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.headers["content-type"] == "application/json"
    assert call.json() == SUBMIT_BODY
    assert client.requests_made["submit"] == 1


async def test_base_url_with_trailing_slash_keeps_its_path(api: ScriptedApi, base_url: str) -> None:
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    async with make_client(base_url + "/") as client:
        await client.submit(SUBMIT_BODY)
    assert api.requests[0].path == "/bygheartsong/api/release_task"


async def test_submit_with_source_audio_sends_multipart_with_src_audio_part(
    api: ScriptedApi, base_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "take.wav"
    source.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    body = {"prompt": "x", "task_type": "cover", "thinking": False, "batch_size": 2, "seed": None}
    async with make_client(base_url) as client:
        await client.submit(body, src_audio=source)
    [call] = api.requests
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert call.form == {
        "prompt": "x",
        "task_type": "cover",
        "thinking": "false",
        "batch_size": "2",
    }
    assert call.files["src_audio"][:2] == ("take.wav", source.read_bytes())


async def test_submit_without_queue_position_gives_none(api: ScriptedApi, base_url: str) -> None:
    api.expect("POST", "/release_task", ok(envelope({"task_id": "t-1", "status": "queued"})))
    async with make_client(base_url) as client:
        assert await client.submit(SUBMIT_BODY) == Submitted("t-1", None)


async def test_acestep_backend_without_key_sends_no_authorization(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    async with make_client(base_url, api_key=None, backend="acestep") as client:
        await client.submit(SUBMIT_BODY)
    assert "authorization" not in api.requests[0].headers


def test_hosted_backend_requires_a_key() -> None:
    with pytest.raises(AuthError, match="needs an API key"):
        BygheartClient("https://iamvision.tech/bygheartsong/api", None)


# -- query ------------------------------------------------------------------------------


async def test_query_reads_running_queued_and_unknown_from_transcript(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_running"]))
    async with make_client(base_url) as client:
        results = await client.query([TASK_A, TASK_B, TASK_C, TASK_UNKNOWN])
    assert api.requests[0].json() == {"task_id_list": [TASK_A, TASK_B, TASK_C, TASK_UNKNOWN]}
    running, queued, unknown = results[TASK_A], results[TASK_B], results[TASK_UNKNOWN]
    assert running.state is TaskState.QUEUED_OR_RUNNING
    assert (running.progress, running.stage) == (0.2, "stub diffusion step 1/4")
    assert running.progress_text == "23:32:45 | INFO | [stub generate_music] diffusion step 1/4"
    assert running.outputs == []
    assert (queued.state, queued.stage, queued.progress) == (
        TaskState.QUEUED_OR_RUNNING,
        "queued",
        0.0,
    )
    assert unknown.state is TaskState.UNKNOWN and unknown.progress_text is None


async def test_query_reads_finished_results_from_transcript(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    async with make_client(base_url) as client:
        results = await client.query([TASK_A, TASK_B, TASK_C, TASK_UNKNOWN])
    a, b = results[TASK_A], results[TASK_B]
    assert a.state is TaskState.SUCCEEDED and a.progress == 1.0 and a.stage == "succeeded"
    [out] = a.outputs
    assert (
        out.file
        == "/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F4136e2ad-020f-0170-6577-265d7b9b85ef.mp3"
    )
    assert (out.seed, out.dit_model, out.lm_model) == (
        "1852436498",
        "acestep-v15-turbo",
        "acestep-5Hz-lm-0.6B",
    )
    assert out.metas["duration"] == 30.0 and out.metas["bpm"] == "N/A"
    assert (out.prompt, out.lyrics) == (
        "upbeat synthwave, female vocals",
        "[verse]\nneon lights tonight",
    )
    assert [o.seed for o in b.outputs] == ["1998814755", "2172961275"]
    assert results[TASK_C].state is TaskState.FAILED and results[TASK_C].outputs == []
    assert results[TASK_UNKNOWN].state is TaskState.UNKNOWN


async def test_query_after_server_restart_transcript(api: ScriptedApi, base_url: str) -> None:
    ids = [
        "c1921a7b-ed3b-4c27-9638-619567fc1733",
        "e1a653e7-724e-4df6-9a68-58c856f8a8d1",
        "f85d76bd-c5e4-4535-9b5d-94ee8c745a19",
    ]
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_after_restart"]))
    async with make_client(base_url) as client:
        results = await client.query(ids)
    assert [results[i].state for i in ids] == [
        TaskState.SUCCEEDED,
        TaskState.QUEUED_OR_RUNNING,
        TaskState.UNKNOWN,
    ]
    assert results[ids[1]].progress == 0.32


async def test_query_reads_form_transcript_with_fixed_seeds(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_form"]))
    jazz = "110de930-911d-455a-a80e-0d0709375a5c"
    async with make_client(base_url) as client:
        results = await client.query([jazz, "93d44bc2-ff84-4856-9fff-890f6559502e"])
    assert [o.seed for o in results[jazz].outputs] == ["1", "2"]
    assert results[jazz].outputs[0].file.endswith(".flac")
    assert results["93d44bc2-ff84-4856-9fff-890f6559502e"].state is TaskState.FAILED


async def test_query_matches_entries_by_task_id_not_order(api: ScriptedApi, base_url: str) -> None:
    entries = json.loads(TRANSCRIPT["query_done"])["data"]
    api.expect("POST", "/query_result", ok(envelope(list(reversed(entries)))))
    async with make_client(base_url) as client:
        results = await client.query([TASK_A, TASK_B, TASK_C, TASK_UNKNOWN])
    assert results[TASK_C].state is TaskState.FAILED
    assert len(results[TASK_B].outputs) == 2 and len(results[TASK_A].outputs) == 1


async def test_query_accepts_an_already_decoded_result_list(
    api: ScriptedApi, base_url: str
) -> None:
    entry = {"task_id": "t", "status": 1, "result": [{"file": "/srv/a/x.mp3", "seed_value": 5}]}
    api.expect("POST", "/query_result", ok(envelope([entry])))
    async with make_client(base_url) as client:
        result = (await client.query(["t"]))["t"]
    assert result.state is TaskState.SUCCEEDED
    assert (result.outputs[0].file, result.outputs[0].seed) == ("/srv/a/x.mp3", "5")


async def test_query_success_without_any_file_is_failed(api: ScriptedApi, base_url: str) -> None:
    empty = json.dumps([{"file": "", "status": 1}, {"status": 1}])
    api.expect(
        "POST", "/query_result", ok(envelope([{"task_id": "t", "status": 1, "result": empty}]))
    )
    async with make_client(base_url) as client:
        assert (await client.query(["t"]))["t"].state is TaskState.FAILED


async def test_query_drops_outputs_whose_file_is_empty(api: ScriptedApi, base_url: str) -> None:
    mixed = json.dumps([{"file": ""}, {"file": "/v1/audio?path=%2Fa.mp3", "seed_value": "1,2"}])
    api.expect(
        "POST", "/query_result", ok(envelope([{"task_id": "t", "status": 1, "result": mixed}]))
    )
    async with make_client(base_url) as client:
        result = (await client.query(["t"]))["t"]
    assert [(o.file, o.seed) for o in result.outputs] == [("/v1/audio?path=%2Fa.mp3", "2")]


async def test_query_tolerates_missing_keys(api: ScriptedApi, base_url: str) -> None:
    entries = [{"task_id": "bare"}, {"task_id": "done-no-result", "status": 1}, {"status": 1}, 7]
    api.expect("POST", "/query_result", ok(envelope(entries)))
    async with make_client(base_url) as client:
        results = await client.query(["bare", "done-no-result"])
    assert results["bare"].state is TaskState.UNKNOWN
    assert results["done-no-result"].state is TaskState.FAILED


async def test_query_ids_missing_from_the_reply_are_unknown(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_empty"]))
    async with make_client(base_url) as client:
        results = await client.query(["x", "y"])
    assert {r.state for r in results.values()} == {TaskState.UNKNOWN}


async def test_query_splits_ids_into_chunks(api: ScriptedApi, base_url: str) -> None:
    api.expect("POST", "/query_result", *[ok(TRANSCRIPT["query_empty"]) for _ in range(3)])
    async with make_client(base_url) as client:
        results = await client.query(["a", "b", "c", "d", "e", "a"], chunk_size=2)
        assert client.requests_made["query"] == 3
    assert [r.json()["task_id_list"] for r in api.requests] == [["a", "b"], ["c", "d"], ["e"]]
    assert sorted(results) == ["a", "b", "c", "d", "e"]


async def test_query_of_nothing_sends_nothing(api: ScriptedApi, base_url: str) -> None:
    async with make_client(base_url) as client:
        assert await client.query([]) == {}
    assert api.requests == []


async def test_undecodable_result_string_is_a_protocol_error(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect(
        "POST", "/query_result", ok(envelope([{"task_id": "t", "status": 1, "result": "[{"}]))
    )
    async with make_client(base_url) as client:
        with pytest.raises(ProtocolError, match="task t"):
            await client.query(["t"])


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, "<html>gateway</html>", media_type="text/html"),
        Reply(200, [1, 2]),
        Reply(200, {"data": {"not": "a list"}, "code": 200}),
        Reply(200, {"code": 200, "error": None}),
    ],
    ids=["html", "array", "data-not-list", "no-data"],
)
async def test_wrong_reply_shapes_are_protocol_errors(
    api: ScriptedApi, base_url: str, reply: Reply
) -> None:
    api.expect("POST", "/query_result", reply)
    async with make_client(base_url) as client:
        with pytest.raises(ProtocolError):
            await client.query(["t"])
    assert len(api.requests) == 1


# -- health and stats -------------------------------------------------------------------


async def test_health_and_stats_return_envelope_data(api: ScriptedApi, base_url: str) -> None:
    api.expect("GET", "/health", ok(TRANSCRIPT["health"]))
    api.expect("GET", "/v1/stats", ok(TRANSCRIPT["stats"]))
    async with make_client(base_url, api_key=None, backend="acestep") as client:
        health, stats = await client.health(), await client.stats()
    assert health is not None and health["status"] == "ok"
    assert stats is not None and stats["queue_maxsize"] == 200


async def test_health_and_stats_are_none_when_the_server_lacks_them(
    api: ScriptedApi, base_url: str
) -> None:
    async with make_client(base_url) as client:
        assert await client.health() is None
        assert await client.stats() is None


async def test_health_is_none_when_nothing_listens() -> None:
    async with make_client(f"http://127.0.0.1:{closed_port()}", backend="acestep") as client:
        assert await client.health() is None


async def test_stats_with_a_bad_key_raises_auth_error(api: ScriptedApi, base_url: str) -> None:
    api.expect("GET", "/v1/stats", Reply(401, TRANSCRIPT["audio_missing_auth"]))
    async with make_client(base_url) as client:
        with pytest.raises(AuthError):
            await client.stats()


# -- error classification ---------------------------------------------------------------


async def submit_error(api: ScriptedApi, base_url: str, *replies: Reply) -> ApiError:
    api.expect("POST", "/release_task", *replies)
    async with make_client(base_url) as client:
        with pytest.raises(ApiError) as info:
            await client.submit(SUBMIT_BODY)
    return info.value


async def test_401_is_auth_error_with_status_and_server_message(
    api: ScriptedApi, base_url: str
) -> None:
    err = await submit_error(api, base_url, Reply(401, TRANSCRIPT["invalid_key"]))
    assert type(err) is AuthError and isinstance(err, BygheartdError)
    assert err.status == 401
    assert "HTTP 401" in str(err) and "Invalid API key" in str(err)


async def test_403_pro_tier_required_is_plan_error_saying_upgrade(
    api: ScriptedApi, base_url: str
) -> None:
    body = {"error": "pro_tier_required", "message": "Free keys cannot use the API"}
    err = await submit_error(api, base_url, Reply(403, body))
    assert isinstance(err, PlanError) and isinstance(err, AuthError)
    assert "pro_tier_required" in str(err) and "upgrade your plan" in str(err)


async def test_any_403_on_a_job_endpoint_is_plan_error(api: ScriptedApi, base_url: str) -> None:
    err = await submit_error(api, base_url, Reply(403, "Forbidden"))
    assert isinstance(err, PlanError) and "upgrade your plan" in str(err)


async def test_429_with_retry_after_seconds(api: ScriptedApi, base_url: str) -> None:
    body = {"error": "credit_limit_reached", "message": "daily credits used"}
    err = await submit_error(api, base_url, Reply(429, body, headers={"Retry-After": "7"}))
    assert isinstance(err, RateLimited)
    assert (err.retry_after, err.reason) == (7.0, "credit_limit_reached")
    assert "HTTP 429" in str(err)


async def test_429_with_retry_after_http_date(api: ScriptedApi, base_url: str) -> None:
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    err = await submit_error(
        api, base_url, Reply(429, {"error": "x"}, headers={"Retry-After": date})
    )
    assert isinstance(err, RateLimited) and err.retry_after is not None
    assert 110 <= err.retry_after <= 121


async def test_429_queue_full_without_retry_after(api: ScriptedApi, base_url: str) -> None:
    err = await submit_error(api, base_url, Reply(429, {"detail": "Server busy: queue is full"}))
    assert isinstance(err, RateLimited)
    assert (err.retry_after, err.reason) == (None, "Server busy: queue is full")


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply(400, TRANSCRIPT["malformed_json"]), "Malformed JSON payload"),
        (Reply(400, TRANSCRIPT["absolute_path"]), "absolute audio file paths are not allowed"),
        (Reply(500, "Internal Server Error", media_type="text/plain"), "Internal Server Error"),
        (Reply(415, ""), "Unsupported Media Type"),
        (Reply(422, {"detail": [{"loc": ["body"], "msg": "bad"}]}), "bad"),
    ],
    ids=["400", "400-path", "500-text", "415-empty", "422-list"],
)
async def test_rejections_carry_the_server_message(
    api: ScriptedApi, base_url: str, reply: Reply, text: str
) -> None:
    err = await submit_error(api, base_url, reply)
    assert isinstance(err, RejectedError)
    assert f"HTTP {reply.status}" in str(err) and text in str(err)


@pytest.mark.parametrize(
    ("code", "kind"),
    [(401, AuthError), (429, RateLimited), (500, RejectedError), (503, TransientError)],
)
async def test_http_200_with_an_error_code_is_classified_by_code(
    api: ScriptedApi, base_url: str, code: int, kind: type[ApiError]
) -> None:
    reply = ok(envelope(None, code=code, error="the envelope says no"))
    api.expect("POST", "/query_result", *[reply] * 3)
    async with make_client(base_url) as client:
        with pytest.raises(kind, match="the envelope says no"):
            await client.query(["t"])


async def test_an_error_without_code_or_data_is_rejected(api: ScriptedApi, base_url: str) -> None:
    api.expect("POST", "/query_result", ok({"error": "wrapper_failure", "message": "try later"}))
    async with make_client(base_url) as client:
        with pytest.raises(RejectedError, match="wrapper_failure"):
            await client.query(["t"])


# -- retries ----------------------------------------------------------------------------


async def test_query_retries_a_503_burst(api: ScriptedApi, base_url: str) -> None:
    api.expect(
        "POST", "/query_result", Reply(503, "busy"), Reply(502, ""), ok(TRANSCRIPT["query_done"])
    )
    async with make_client(base_url) as client:
        results = await client.query([TASK_A])
        assert client.requests_made["query"] == 3
    assert results[TASK_A].state is TaskState.SUCCEEDED


async def test_query_gives_up_after_the_policy_attempts(api: ScriptedApi, base_url: str) -> None:
    api.expect("POST", "/query_result", *[Reply(504, "gateway timeout")] * 3)
    async with make_client(base_url) as client:
        with pytest.raises(TransientError) as info:
            await client.query([TASK_A])
    assert info.value.status == 504 and len(api.requests) == 3


async def test_submit_retries_gateway_errors_since_nothing_was_created(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/release_task", Reply(503, "busy"), ok(TRANSCRIPT["submit_a"]))
    async with make_client(base_url) as client:
        assert (await client.submit(SUBMIT_BODY)).task_id == TASK_A
    assert len(api.calls("/release_task")) == 2


async def test_submit_retries_when_the_connection_never_opens() -> None:
    async with make_client(f"http://127.0.0.1:{closed_port()}") as client:
        with pytest.raises(TransientError) as info:
            await client.submit(SUBMIT_BODY)
        assert client.requests_made["submit"] == 3
    assert info.value.outcome_unknown is False


async def test_submit_read_timeout_is_outcome_unknown_and_not_retried(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"], delay=0.5))
    async with make_client(base_url, timeout=0.1) as client:
        with pytest.raises(TransientError) as info:
            await client.submit(SUBMIT_BODY)
        assert client.requests_made["submit"] == 1
    assert info.value.outcome_unknown is True and "[api] timeout_seconds" in str(info.value)
    assert "may or may not exist" in str(info.value)


@pytest.mark.parametrize("mode", ["close", "reset"])
async def test_submit_reply_lost_after_sending_is_outcome_unknown(mode: str) -> None:
    with RawServer(mode) as raw:
        async with make_client(f"http://127.0.0.1:{raw.port}") as client:
            with pytest.raises(TransientError) as info:
                await client.submit(SUBMIT_BODY)
        assert raw.connections == 1
    assert info.value.outcome_unknown is True


async def test_query_retries_dropped_connections() -> None:
    with RawServer("close") as raw:
        async with make_client(f"http://127.0.0.1:{raw.port}") as client:
            with pytest.raises(TransientError):
                await client.query(["t"])
        assert raw.connections == 3


async def test_submit_with_an_unreadable_success_is_outcome_unknown(
    api: ScriptedApi, base_url: str
) -> None:
    api.expect("POST", "/release_task", Reply(200, "<html>ok</html>", media_type="text/html"))
    err = await submit_error(api, base_url)
    assert isinstance(err, TransientError) and err.outcome_unknown is True
    assert len(api.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
async def test_submit_never_retries_auth_limits_or_rejections(
    api: ScriptedApi, base_url: str, status: int
) -> None:
    await submit_error(api, base_url, *[Reply(status, {"detail": "no"})] * 3)
    assert len(api.requests) == 1


def test_retry_delays_grow_exponentially_and_stay_bounded() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=4.0, jitter=False)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    jittered = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert all(0 <= jittered.delay(n) <= 4.0 for n in range(20))
    assert policy.delay(0, retry_after=3.0) == 3.0 and policy.delay(0, retry_after=99) == 4.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [("12", 12.0), ("0", 0.0), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_retry_after_parses_seconds_or_nothing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_parses_http_dates_relative_to_now() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == 60.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


# -- the key stays secret ---------------------------------------------------------------


async def test_api_key_appears_in_no_error_log_or_repr(
    api: ScriptedApi, base_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"detail": f"Invalid API key {KEY}"}  # a server that echoes what it got
    errors: list[BaseException] = []

    async def collect(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:
            errors.append(exc)

    for status, body in [
        (401, echo),
        (403, echo),
        (429, echo),
        (400, echo),
        (500, KEY),
        (503, echo),
    ]:
        api.expect("POST", "/release_task", *[Reply(status, body)] * 3)
        async with make_client(base_url) as client:
            await collect(client.submit(SUBMIT_BODY))
    api.expect("POST", "/query_result", ok(envelope(None, code=401, error=KEY)))
    api.expect("POST", "/query_result", Reply(200, f"not json {KEY}"))
    api.expect("GET", "/v1/audio", Reply(404, echo), Reply(200, KEY, media_type="text/html"))
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"], delay=0.5))
    async with make_client(base_url, timeout=0.1) as client:
        await collect(client.query(["t"]))
        await collect(client.query(["t"]))
        await collect(client.download("/srv/acestep/api_audio/a.mp3", tmp_path / "a"))
        await collect(client.download("/srv/acestep/api_audio/b.mp3", tmp_path / "b"))
        await collect(client.download("http://evil.example/v1/audio?path=x", tmp_path / "c"))
        await collect(client.submit(SUBMIT_BODY))
        client_reprs = [repr(client), str(client), repr(vars(client))]
    for port_mode in ["close", "reset"]:
        with RawServer(port_mode) as raw:
            async with make_client(f"http://127.0.0.1:{raw.port}") as client:
                await collect(client.submit(SUBMIT_BODY))
    async with make_client(f"http://127.0.0.1:{closed_port()}") as client:
        await collect(client.submit(SUBMIT_BODY))
        await collect(client.download("/srv/x.mp3", tmp_path / "d"))

    assert len(errors) == 16 and all(isinstance(e, ApiError) for e in errors)
    for err in errors:
        chain: list[BaseException] = []
        link: BaseException | None = err
        while link is not None:
            chain.append(link)
            link = link.__cause__ or link.__context__
        assert not any(isinstance(e, httpx.HTTPError) for e in chain)  # they hold the request
        text = "".join(traceback.format_exception(err)) + repr(err) + repr(err.args)
        assert KEY not in text, text
    assert "***" in str(errors[0])
    assert KEY not in caplog.text
    assert all(KEY not in text for text in client_reprs)
