"""The client-against-a-scripted-API setup that several test modules share: one scripted
server a module (starting uvicorn per test would dominate their run time), a fresh script
for every test, and a client with retries fast enough that no test waits on a backoff.

Import the fixtures by their function names (`scripted_server_fixture`,
`scripted_api_fixture`, `scripted_origin_fixture`); tests ask for them as `server`, `api`
and `origin`, so a module can still override any one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from _servers import Reply, ScriptedApi, ServerThread, scripted_server

from bygheartd.api.client import BygheartClient, RetryPolicy

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005)

ScriptedPair = tuple[ScriptedApi, ServerThread]


@pytest.fixture(name="server", scope="module")
def scripted_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedPair]:
    with scripted_server(tmp_path_factory.mktemp("audio")) as pair:
        yield pair


@pytest.fixture(name="api")
def scripted_api_fixture(server: ScriptedPair) -> ScriptedApi:
    server[0].reset()
    return server[0]


@pytest.fixture(name="origin")
def scripted_origin_fixture(server: ScriptedPair) -> str:
    return server[1].origin


def scripted_client(base_url: str, key: str, **kwargs: Any) -> BygheartClient:
    """A client whose retries and timeout keep a failing test short; kwargs override."""
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeout", 2.0)
    return BygheartClient(base_url, key, **kwargs)


def ok(raw: str | dict[str, Any], **kwargs: Any) -> Reply:
    return Reply(200, raw, media_type="application/json", **kwargs)


def audio_ref(server_path: str) -> str:
    """A `file` value in the relative form the server writes: the audio route, path quoted."""
    return "/v1/audio?path=" + quote(server_path, safe="")
