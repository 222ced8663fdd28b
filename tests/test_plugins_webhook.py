"""First-party `webhook`: signed POSTs to a real HTTP server on 127.0.0.1, with retries."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures.factories import first_party, make_job, write_audio

from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd.jobs import JobStatus
from bygheartd.logs import clear_secrets, setup_logging

pytestmark = pytest.mark.anyio


class Receiver(ThreadingHTTPServer):
    """Records each request; answers with the next status in `statuses` (then 200)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/token-abc"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def webhook_host(**table: Any) -> PluginHost:
    table.setdefault("backoff_seconds", 0.01)
    host = PluginHost.load(
        PluginSettings(enabled=["webhook"], tables={"webhook": table}, load_env=None)
    )
    assert host.active == ["webhook"]
    return host


async def test_completion_is_posted_as_signed_json(tmp_path: Path, receiver: Receiver) -> None:
    song = write_audio(tmp_path / "song.mp3", seconds=0.5)
    host = webhook_host(url=receiver.url, secret="whsec-test")
    assert await host.on_done(make_job(status=JobStatus.DONE), [song]) == []
    [(headers, body)] = receiver.requests
    assert headers["x-bygheartd-event"] == "complete"
    assert headers["content-type"] == "application/json"
    signed = headers["x-bygheartd-timestamp"].encode() + b"." + body
    expected = hmac.new(b"whsec-test", signed, hashlib.sha256).hexdigest()
    assert headers["x-bygheartd-signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["event"] == "complete"
    assert payload["job"]["id"] == "01JVX3K9TESTJOB"
    assert payload["job"]["files"] == [
        {"path": str(song), "name": "song.mp3", "size": song.stat().st_size}
    ]


async def test_failure_is_posted_with_the_reason(receiver: Receiver) -> None:
    host = webhook_host(url=receiver.url)
    assert await host.on_failed(make_job(status=JobStatus.FAILED), "generation failed") == []
    [(headers, body)] = receiver.requests
    assert headers["x-bygheartd-event"] == "failed"
    assert "x-bygheartd-signature" not in headers
    assert json.loads(body)["reason"] == "generation failed"


async def test_held_is_posted_only_when_asked_for(receiver: Receiver) -> None:
    await webhook_host(url=receiver.url).on_held(make_job(), "credit limit reached")
    assert receiver.requests == []
    host = webhook_host(url=receiver.url, events=["held"])
    assert await host.on_held(make_job(), "credit limit reached") == []
    assert receiver.requests[0][0]["x-bygheartd-event"] == "held"


async def test_server_errors_are_retried_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    assert await webhook_host(url=receiver.url, attempts=3).on_failed(make_job(), "x") == []
    deliveries = {headers["x-bygheartd-delivery"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 3 and len(deliveries) == 1


async def test_giving_up_is_a_failure_that_hides_the_url_path(receiver: Receiver) -> None:
    receiver.statuses = [502, 502]
    [failure] = await webhook_host(url=receiver.url, attempts=2).on_failed(make_job(), "x")
    port = receiver.server_address[1]
    assert failure.error == (
        f"RuntimeError: webhook http://127.0.0.1:{port} failed after 2 attempt(s): HTTP 502"
    )
    assert "token-abc" not in failure.error


async def test_a_plugin_secret_never_reaches_the_log_even_at_debug(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/T0-secret-path-4711"
    monkeypatch.setenv("REVIEW_HOOK_URL", token_url)
    stream = io.StringIO()
    clear_secrets()
    setup_logging("debug", stream=stream)
    try:
        host = first_party(["webhook"], webhook={"url": {"env": "REVIEW_HOOK_URL"}})
        failures = await host.on_failed(make_job(), "the server said no")
    finally:
        setup_logging("info", stream=io.StringIO())
        clear_secrets()
    assert failures == [] and len(receiver.requests) == 1
    assert "HTTP Request" in stream.getvalue()  # httpx logs each request at debug
    assert "T0-secret-path-4711" not in stream.getvalue()


async def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    [failure] = await webhook_host(url=receiver.url, attempts=3).on_failed(make_job(), "x")
    assert len(receiver.requests) == 1 and "answered 404" in failure.error


async def test_connection_errors_are_retried_then_reported() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    [failure] = await webhook_host(url=f"http://127.0.0.1:{port}/", attempts=2).on_failed(
        make_job(), "x"
    )
    assert failure.error.endswith("failed after 2 attempt(s): ConnectError")
