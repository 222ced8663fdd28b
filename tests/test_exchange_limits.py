"""Whole-exchange time limits and truthful download refusals, against real peers on
127.0.0.1: the scripted API behind a misbehaving proxy that drips replies a byte at a time,
stops a download mid-body, or redirects it. Also the ticker that keeps a slow tick from
piling up (or filling the log), and the config keys that set the limits.

Every test asserts an outcome (which error, which message, how many requests), never a
duration; each one would hang or read differently without the limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from _misbehaving import MisbehavingProxy, Rule
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    audio_ref,
    ok,
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, TASK_A, TRANSCRIPT, Reply, ScriptedApi
from conftest import MakeConfig

from bygheartd.api.client import (
    BygheartClient,
    DownloadLimits,
    RefusedAudioUrl,
    RejectedError,
    RetryPolicy,
    TaskState,
    TimedOut,
)
from bygheartd.config import parse_config
from bygheartd.engine.ticker import Ticker
from bygheartd.errors import ConfigError
from bygheartd.runtime import make_client as runtime_client

pytestmark = pytest.mark.anyio

KEY = "bgh_exchange_limits_key_42"
MP3 = b"\xff\xfb\x94\x64" + random.Random(7).randbytes(32640 - 4)
OTHER_MP3 = b"\xff\xfb\x94\x64" + random.Random(8).randbytes(16000)
# Each test ends well inside this; without the limits the dripping ones would run for hours.
HANG = 60


@pytest.fixture
def upstream(origin: str) -> str:
    return origin


def client_for(origin: str, **kwargs: Any) -> BygheartClient:
    kwargs.setdefault("timeout", 1.0)
    return scripted_client(origin + PREFIX, KEY, **kwargs)


# -- submit, poll and probe: the whole exchange --------------------------------------


async def test_a_poll_reply_dripping_at_one_byte_a_second_is_cut_at_timeout_seconds(
    api: ScriptedApi, upstream: str
) -> None:
    api.expect("POST", "/query_result", *[ok(TRANSCRIPT["query_done"])] * 3)
    with MisbehavingProxy(upstream, Rule("POST /bygheartsong/api/query_result", "drip")) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(TimedOut) as info:
                await client.query([TASK_A])
            assert client.requests_made["query"] == 3  # retried per the rules, each bounded
    message = str(info.value)
    assert info.value.limit == "api.timeout_seconds" and not info.value.outcome_unknown
    assert "no complete reply within 1 s ([api] timeout_seconds" in message
    assert "the limit of the whole exchange; still reading the reply" in message


async def test_a_dripping_submit_reply_is_outcome_unknown_and_never_sent_twice(
    api: ScriptedApi, upstream: str
) -> None:
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    with MisbehavingProxy(upstream, Rule("POST /bygheartsong/api/release_task", "drip")) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(TimedOut) as info:
                await client.submit({"prompt": "x", "batch_size": 1})
        assert len(proxy.seen("release_task")) == 1
    assert info.value.outcome_unknown is True
    assert "[api] timeout_seconds" in str(info.value)
    assert "may or may not exist" in str(info.value)


async def test_a_health_probe_that_drips_is_an_error_not_a_missing_endpoint(
    api: ScriptedApi, upstream: str
) -> None:
    api.expect("GET", "/health", ok(TRANSCRIPT["health"]))
    with MisbehavingProxy(upstream, Rule("GET /bygheartsong/api/health", "drip")) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(TimedOut, match="timeout_seconds"):
                await client.health()


async def test_a_redirected_api_call_names_where_it_pointed(
    api: ScriptedApi, upstream: str
) -> None:
    moved = Reply(301, "", headers={"location": "https://api.elsewhere.example/query_result"})
    api.expect("POST", "/query_result", moved)
    async with client_for(upstream) as client:
        with pytest.raises(RejectedError) as info:
            await client.query([TASK_A])
    assert "redirected the request to api.elsewhere.example" in str(info.value)
    assert "never redirected" in str(info.value) and len(api.requests) == 1


# -- downloads: stall, minimum rate ---------------------------------------------------


async def test_a_download_that_stalls_mid_body_is_cut_and_resumed(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("stall.mp3", MP3)
    stall = Rule("/v1/audio", "stall", after_body_bytes=4000, times=1)
    limits = DownloadLimits(stall_seconds=0.3, min_bytes_per_second=1024)
    with MisbehavingProxy(upstream, stall) as proxy:
        async with client_for(proxy.origin, timeout=5.0, download_limits=limits) as client:
            with anyio.fail_after(HANG):
                got = await client.download(audio_ref(server_path), tmp_path / "song")
            assert client.requests_made["download"] == 2
    assert got.path.read_bytes() == MP3 and got.sha256 == hashlib.sha256(MP3).hexdigest()
    assert [r.headers.get("range") for r in api.calls("/v1/audio")] == [None, "bytes=4000-"]


async def test_a_download_that_keeps_stalling_says_which_limit_and_keeps_its_part(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("stuck.mp3", MP3)
    limits = DownloadLimits(stall_seconds=0.3, min_bytes_per_second=1024)
    with MisbehavingProxy(upstream, Rule("/v1/audio", "stall", after_body_bytes=4000)) as proxy:
        async with client_for(proxy.origin, timeout=5.0, download_limits=limits) as client:
            with anyio.fail_after(HANG), pytest.raises(TimedOut) as info:
                await client.download(audio_ref(server_path), tmp_path / "song")
    assert info.value.limit == "api.download_stall_seconds"
    assert "no bytes for 0.3 s" in str(info.value) and "download_stall_seconds" in str(info.value)
    assert "after 12000 of 32640 bytes" in str(info.value)  # each attempt resumed the last
    assert (tmp_path / "song.part").read_bytes() == MP3[:12000]  # kept for the next one


async def test_a_download_slower_than_the_minimum_rate_is_cut(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("slow.mp3", MP3)
    # Bytes keep coming (no stall), but at 2 KB/s the file would take 16 s.
    drip = Rule("/v1/audio", "drip", bytes_per_second=2000)
    limits = DownloadLimits(stall_seconds=10, min_bytes_per_second=65536)
    with MisbehavingProxy(upstream, drip) as proxy:
        async with client_for(
            proxy.origin,
            timeout=0.5,
            download_limits=limits,
            retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.005),
        ) as client:
            with anyio.fail_after(HANG), pytest.raises(TimedOut) as info:
                await client.download(audio_ref(server_path), tmp_path / "song")
    assert info.value.limit == "api.download_min_bytes_per_second"
    message = str(info.value)
    assert "too slow" in message and "65536 bytes/s" in message
    assert "timeout_seconds + size / download_min_bytes_per_second" in message
    # The second attempt resumed what the first kept.
    assert api.calls("/v1/audio")[1].headers.get("range", "").startswith("bytes=")
    assert 0 < (tmp_path / "song.part").stat().st_size < len(MP3)


async def test_downloads_of_other_songs_go_on_while_one_is_stuck(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    stuck_path = api.add_audio("stuck.mp3", MP3)
    fine_path = api.add_audio("fine.mp3", OTHER_MP3)
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    stall = Rule("stuck.mp3", "stall", after_body_bytes=100)
    limits = DownloadLimits(stall_seconds=30, min_bytes_per_second=1)
    with MisbehavingProxy(upstream, stall) as proxy:
        async with client_for(proxy.origin, timeout=30.0, download_limits=limits) as client:
            stuck = asyncio.ensure_future(client.download(audio_ref(stuck_path), tmp_path / "a"))
            try:
                with anyio.fail_after(HANG):
                    while not proxy.seen("stuck.mp3"):
                        await anyio.sleep(0.01)
                    fine = await client.download(audio_ref(fine_path), tmp_path / "b")
                    polled = await client.query([TASK_A])  # the same client, the same pool
            finally:
                stuck.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stuck
    assert fine.path.read_bytes() == OTHER_MP3
    assert polled[TASK_A].state is TaskState.SUCCEEDED


# -- downloads: redirects -------------------------------------------------------------


async def test_a_download_redirected_to_another_host_is_refused_once(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("moved.mp3", MP3)
    away = Rule("/v1/audio", "redirect", location="http://cdn.example.invalid/a.mp3")
    with MisbehavingProxy(upstream, away) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(RefusedAudioUrl) as info:
                await client.download(audio_ref(server_path), tmp_path / "song")
            assert client.requests_made["download"] == 1  # final: never retried
    assert isinstance(info.value, RejectedError) and info.value.status == 302
    assert (
        "the server redirected the download to another host (cdn.example.invalid): refused; "
        "the key is never sent elsewhere"
    ) in str(info.value)
    assert not list(tmp_path.iterdir())


async def test_a_redirect_on_the_api_origin_is_followed_with_the_key(
    api: ScriptedApi, upstream: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("here.mp3", MP3)
    here = Rule(
        "/v1/audio", "redirect", location=PREFIX + audio_ref(server_path) + "&moved=1", times=1
    )
    with MisbehavingProxy(upstream, here) as proxy:
        async with client_for(proxy.origin) as client:
            got = await client.download(audio_ref(server_path), tmp_path / "song")
        assert len(proxy.seen("/v1/audio")) == 2
    assert got.path.read_bytes() == MP3
    [call] = api.calls("/v1/audio")
    assert call.query.endswith("&moved=1") and call.headers["authorization"] == f"Bearer {KEY}"


async def test_a_result_file_on_another_host_is_refused_as_final(tmp_path: Path) -> None:
    async with client_for("http://127.0.0.1:9") as client:
        with pytest.raises(RefusedAudioUrl) as info:
            await client.download("http://cdn.example.invalid/v1/audio?path=x", tmp_path / "x")
        assert client.requests_made["download"] == 0
    assert isinstance(info.value, RejectedError)
    assert "points to another host (cdn.example.invalid)" in str(info.value)


# -- the ticker: a slow tick coalesces quietly ----------------------------------------


async def test_a_tick_slower_than_its_interval_coalesces_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    running, most, runs = 0, 0, 0

    async def slow() -> None:
        nonlocal running, most, runs
        running += 1
        most = max(most, running)
        await anyio.sleep(0.4)
        running -= 1
        runs += 1

    ticker = Ticker()
    ticker.every("slow", 0.05, slow)
    ticker.start()
    try:
        with anyio.fail_after(HANG):
            while runs < 3:
                await anyio.sleep(0.02)
    finally:
        ticker.shutdown()
    assert most == 1
    assert "maximum number of running instances" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_wake_during_a_run_runs_the_tick_once_more() -> None:
    release = asyncio.Event()
    runs = 0

    async def tick() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()

    ticker = Ticker()
    ticker.every("submit", 3600, tick)
    ticker.start()
    try:
        with anyio.fail_after(HANG):
            while runs < 1:
                await anyio.sleep(0.01)
            ticker.wake("submit")  # work arrived after the running tick looked
            ticker.wake("submit")  # twice: still one more run, not two
            release.set()
            while runs < 2:
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)
    finally:
        ticker.shutdown()
    assert runs == 2


async def test_shutdown_cancels_a_tick_in_progress() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def tick() -> None:
        started.set()
        try:
            await anyio.sleep(HANG)
        except BaseException:
            cancelled.set()
            raise

    ticker = Ticker()
    ticker.every("poll", 3600, tick)
    ticker.start()
    with anyio.fail_after(HANG):
        await started.wait()
        ticker.shutdown()
        await cancelled.wait()


# -- the config keys ------------------------------------------------------------------


def test_time_limit_keys_default_and_validate() -> None:
    api = parse_config({}).api
    assert (api.timeout_seconds, api.download_stall_seconds) == (30.0, 30.0)
    assert api.download_min_bytes_per_second == 16384
    with pytest.raises(ConfigError, match=r"api\.download_stall_seconds"):
        parse_config({"api": {"download_stall_seconds": 0}})
    with pytest.raises(ConfigError, match=r"api\.download_min_bytes_per_second"):
        parse_config({"api": {"download_min_bytes_per_second": 0}})
    with pytest.raises(ConfigError, match=r"did you mean 'api\.download_stall_seconds'"):
        parse_config({"api": {"download_stall_second": 5}})


async def test_the_daemons_client_gets_the_limits_from_the_config(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        api={"timeout_seconds": 7, "download_stall_seconds": 3, "download_min_bytes_per_second": 99}
    )
    async with runtime_client(config) as client:
        assert client.timeout == 7.0
        assert client.download_limits == DownloadLimits(stall_seconds=3, min_bytes_per_second=99)
