"""Hostile replies from a misbehaving peer on 127.0.0.1 (issue 30, items 3 to 6): a
compressed download that inflates without end, replies of hundreds of megabytes, JSON
nested 100,000 levels deep, a Content-Length that lies short. Each one ends in a clear
bygheartd error that says what the server did: nothing fills the disk or the memory, no
exception escapes, and no wrong file is kept as a take.

The peer streams its bombs as it sends them (never a 2.5 GiB body in memory), and the
tests use small limits where the default ones would only make them slower.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soundfile
from _jobs import song, until
from _misbehaving import MisbehavingProxy, Rule, deflate_bomb, streamed
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    FAST,
    audio_ref,
    ok,
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, TASK_A, TRANSCRIPT, ScriptedApi, envelope
from conftest import MakeConfig

from bygheartd.api.audiocheck import incomplete_bytes
from bygheartd.api.client import (
    AuthError,
    BygheartClient,
    DownloadLimits,
    DownloadTooLarge,
    ProtocolError,
    RefusedAudioUrl,
    RejectedError,
    ReplyLimits,
    ReplyTooLarge,
    TaskState,
    TransientError,
)
from bygheartd.api.download import sniff_audio_ext
from bygheartd.errors import BygheartdError
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

KEY = "bgh_hostile_replies_key_77"
HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time
MiB = 1 << 20
AUDIO = "GET /bygheartsong/api/v1/audio"
# A WAV header for a 96 kHz, 32-bit float, stereo stream of unknown length: what a bomb
# starts with so that it passes for audio, and only its size gives it away.
WAV_HEAD = (
    b"RIFF\xff\xff\xff\xffWAVEfmt "
    + struct.pack("<IHHIIHH", 16, 3, 2, 96000, 768000, 8, 32)
    + b"data\xff\xff\xff\xff"
)
DEEP = 100_000


def client_for(origin: str, **kwargs: Any) -> BygheartClient:
    kwargs.setdefault("timeout", 5.0)
    return scripted_client(origin + PREFIX, KEY, **kwargs)


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def reply(match: str, **kwargs: Any) -> Rule:
    """The peer answers requests matching `match` itself (200 unless `status` says)."""
    kwargs.setdefault("status", 200)
    return Rule(match, "reply", **kwargs)


def json_reply(body: str | bytes, **kwargs: Any) -> Rule:
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return reply(
        kwargs.pop("match"),
        status=kwargs.pop("status", 200),
        headers=headers,
        body=data,
        content_length=len(data),
        **kwargs,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def takes() -> dict[str, bytes]:
    """Two seconds of real audio in each format a server writes."""
    rate = 48000
    rng = np.random.default_rng(30)
    samples = (rng.standard_normal((2 * rate, 2)) * 0.1).astype(np.float32)
    made = {}
    for name, fmt, subtype in (
        ("wav", "WAV", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
        ("opus", "OGG", "OPUS"),
    ):
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
        made[name] = buffer.getvalue()
    return made


# -- 3. a compressed download is bounded by what it may decode to -----------------------


async def test_a_gzip_bomb_stops_at_the_ceiling_for_the_reported_duration(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """2.5 MiB of gzip that inflates to 2.5 GiB: stopped at the ceiling for a take of 30 s
    (a minute's worth of 96 kHz 32-bit stereo WAV, half again: 65.9 MiB), the partial file
    deleted, memory bounded, the job's reason saying what the server did; never retried."""
    bomb = reply(
        AUDIO,
        headers={"Content-Type": "audio/wav", "Content-Encoding": "gzip"},
        body=deflate_bomb(2560 * MiB, prefix=WAV_HEAD),
    )
    with MisbehavingProxy(origin, bomb) as proxy:
        async with client_for(proxy.origin) as client:
            tracemalloc.start()
            try:
                with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as info:
                    await client.download(
                        audio_ref("/srv/acestep/api_audio/bomb.wav"),
                        tmp_path / "song",
                        seconds=30,
                    )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert client.requests_made["download"] == 1  # final: the same file every time
    message = str(info.value)
    assert "the download decoded past 65.9 MiB (from gzip)" in message
    assert "the take is 30 s" in message and "96 kHz 32-bit stereo WAV" in message
    assert "refused, and the partial file deleted" in message
    assert isinstance(info.value, RejectedError)  # delivery fails the job once with it
    assert leftovers(tmp_path) == []  # no .part, no take
    assert peak < 24 * MiB  # decoded in steps, never the whole body
    assert bomb.sent < 2560 * MiB // 1000  # the client hung up: the rest was never sent


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_bomb_without_a_reported_duration_stops_at_the_absolute_cap(
    api: ScriptedApi, origin: str, tmp_path: Path, coding: str
) -> None:
    bomb = reply(
        AUDIO,
        headers={"Content-Encoding": coding},
        body=deflate_bomb(64 * MiB, prefix=WAV_HEAD, coding=coding, block=256 * 1024),
    )
    limits = DownloadLimits(max_bytes=1 * MiB)
    with MisbehavingProxy(origin, bomb) as proxy:
        async with client_for(proxy.origin, download_limits=limits) as client:
            with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as info:
                await client.download(audio_ref("/srv/acestep/api_audio/b.wav"), tmp_path / "s")
    message = str(info.value)
    assert f"the download decoded past 1 MiB (from {coding})" in message
    assert "the server reported no duration, and no take is over 1 MiB" in message
    assert leftovers(tmp_path) == []


async def test_an_endless_plain_body_stops_at_the_ceiling_too(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    endless = reply(AUDIO, body=streamed(WAV_HEAD, bytes(65536), 512 * MiB))
    limits = DownloadLimits(max_bytes=2 * MiB)
    with MisbehavingProxy(origin, endless) as proxy:
        async with client_for(proxy.origin, download_limits=limits) as client:
            with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as info:
                await client.download(audio_ref("/srv/acestep/api_audio/e.wav"), tmp_path / "s")
    assert "the download decoded past 2 MiB:" in str(info.value)  # no "(from ...)": plain
    assert leftovers(tmp_path) == [] and endless.sent < 256 * MiB


async def test_a_file_announced_over_the_ceiling_is_refused_unread(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    huge = reply(
        AUDIO,
        body=streamed(WAV_HEAD, bytes(65536), 64 * MiB),
        content_length=64 * MiB,
    )
    limits = DownloadLimits(max_bytes=1 * MiB)
    with MisbehavingProxy(origin, huge) as proxy:
        async with client_for(proxy.origin, download_limits=limits) as client:
            with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as info:
                await client.download(audio_ref("/srv/acestep/api_audio/h.wav"), tmp_path / "s")
    assert "the server announced 64 MiB of audio" in str(info.value)
    assert "refused unread" in str(info.value) and leftovers(tmp_path) == []


async def test_the_duration_a_poll_reported_bounds_the_download_of_that_take(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """The engine downloads what a poll reported: the client remembers each take's
    duration (metas) by its file reference, so no caller has to pass it on."""
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    bomb = reply(
        "4136e2ad-020f-0170-6577-265d7b9b85ef.mp3",
        headers={"Content-Encoding": "gzip"},
        body=deflate_bomb(64 * MiB, prefix=WAV_HEAD, block=256 * 1024),
    )
    limits = DownloadLimits(
        bytes_per_reported_second=10_000, min_ceiling_seconds=0, max_bytes=1 * MiB
    )
    with MisbehavingProxy(origin, bomb) as proxy:
        async with client_for(proxy.origin, download_limits=limits) as client:
            found = await client.query([TASK_A])
            [take] = found[TASK_A].outputs
            with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as info:
                await client.download(take.file, tmp_path / "song")
            # A caller that knows better (a task whose length is its source audio's) says
            # "no duration": the absolute cap applies.
            with anyio.fail_after(HANG), pytest.raises(DownloadTooLarge) as unknown:
                await client.download(take.file, tmp_path / "song", seconds=0)
    # 30 s at 10,000 bytes/s: the ceiling for this take is 293 KiB.
    assert "decoded past 293 KiB (from gzip): the take is 30 s" in str(info.value)
    assert "decoded past 1 MiB (from gzip): the server reported no duration" in str(unknown.value)


async def test_a_legitimately_compressed_take_is_decoded_and_kept(
    api: ScriptedApi, origin: str, tmp_path: Path, takes: dict[str, bytes]
) -> None:
    server_path = api.add_audio("fine.wav", takes["wav"])
    with MisbehavingProxy(origin, Rule(AUDIO, "gzip")) as proxy:
        async with client_for(proxy.origin) as client:
            got = await client.download(audio_ref(server_path), tmp_path / "song", seconds=2)
    assert got.path.read_bytes() == takes["wav"] and got.ext == ".wav"
    assert api.calls("/v1/audio")[0].headers["accept-encoding"] == "gzip, deflate"


async def test_a_download_that_is_not_audio_is_refused_from_its_first_bytes(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """A bomb of zeros (or an HTML page) is not fetched in full to find out."""
    zeros = reply(
        AUDIO,
        headers={"Content-Encoding": "gzip"},
        body=deflate_bomb(2560 * MiB),
    )
    with MisbehavingProxy(origin, zeros) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(ProtocolError) as info:
                await client.download(audio_ref("/srv/acestep/api_audio/z.mp3"), tmp_path / "s")
    assert "the reply is not audio" in str(info.value)
    assert not isinstance(info.value, RejectedError)  # held and retried by delivery
    assert leftovers(tmp_path) == [] and zeros.sent < 64 * MiB


async def test_an_error_reply_to_a_download_is_read_only_for_its_message(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """A 503 whose page is a gzip bomb: classified by its status from its first bytes."""
    busy = reply(
        AUDIO,
        status=503,
        headers={"Content-Encoding": "gzip"},
        body=deflate_bomb(2560 * MiB, prefix=b"try later "),
    )
    with MisbehavingProxy(origin, busy) as proxy:
        async with client_for(proxy.origin) as client:
            tracemalloc.start()
            try:
                with anyio.fail_after(HANG), pytest.raises(TransientError) as info:
                    await client.download(audio_ref("/srv/acestep/api_audio/x.mp3"), tmp_path / "s")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert client.requests_made["download"] == FAST.attempts
    assert "HTTP 503: try later" in str(info.value) and len(str(info.value)) < 500
    assert peak < 16 * MiB and busy.sent < 64 * MiB


async def test_a_download_in_an_encoding_never_asked_for_is_refused(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    brotli = reply(AUDIO, headers={"Content-Encoding": "br"}, body=b"\x1b" * 4096)
    with MisbehavingProxy(origin, brotli) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError) as info:
                await client.download(audio_ref("/srv/acestep/api_audio/b.mp3"), tmp_path / "s")
    assert "encoded as 'br', which bygheartd did not ask for" in str(info.value)
    assert "Accept-Encoding: gzip, deflate" in str(info.value)


async def test_a_gzip_bomb_download_fails_the_job_once_saying_what_the_server_did(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """Through the engine: the poll reported 20 s, the download inflated past the ceiling
    for it, the job failed once with that reason, and nothing is left in output/."""
    bomb = reply(
        "GET /v1/audio",
        headers={"Content-Encoding": "gzip"},
        body=deflate_bomb(2560 * MiB, prefix=WAV_HEAD),
    )
    with MisbehavingProxy(simulator.base_url, bomb) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await runtime.service.submit_file(song(tmp_path, "bomb.txt", title="Bomb"))
            job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
    assert job.status is JobStatus.FAILED, job.reason
    reason = job.reason or ""
    assert reason.startswith("cannot download the audio: GET /v1/audio?path=")
    assert "decoded past 65.9 MiB (from gzip): the take is 20 s" in reason
    assert bomb.hits == 1  # failed once, not fetched again and again
    assert not list(config.folders.output.iterdir())


# -- 4. every reply is read streamed, within a limit fitting its endpoint ----------------


async def test_a_200_mb_poll_reply_is_refused_at_its_limit_in_bounded_memory(
    api: ScriptedApi, origin: str
) -> None:
    big = reply(
        "POST /bygheartsong/api/query_result",
        headers={"Content-Type": "application/json"},
        body=streamed(b'{"code":200,"data":[', b'"' + b"x" * 65534 + b'",', 200_000_000),
    )
    with MisbehavingProxy(origin, big) as proxy:
        async with client_for(proxy.origin) as client:
            tracemalloc.start()
            try:
                with anyio.fail_after(HANG), pytest.raises(ReplyTooLarge) as info:
                    await client.query([TASK_A])
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert client.requests_made["query"] == 1  # not retried
    message = str(info.value)
    assert message.startswith("POST /query_result: HTTP 200: the reply ran past 1.5 MiB")
    assert "over the limit of 1.5 MiB for a poll of 1 id: refused unread" in message
    assert info.value.limit == int(1.5 * MiB)
    assert peak < 16 * MiB and big.sent < 100_000_000


async def test_the_poll_limit_scales_with_the_ids_asked(api: ScriptedApi, origin: str) -> None:
    entries = [{"task_id": f"t{i}", "status": 0, "result": "[]"} for i in range(3)]
    body = json.dumps(envelope(entries) | {"padding": "p" * 2500})
    limits = ReplyLimits(poll_base_bytes=1024, poll_per_id_bytes=1024)
    rule = json_reply(body, match="POST /bygheartsong/api/query_result")
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin, reply_limits=limits) as client:
            with pytest.raises(ReplyTooLarge, match="over the limit of 2 KiB for a poll of 1 id"):
                await client.query(["t0"])
            found = await client.query(["t0", "t1", "t2"], chunk_size=3)  # 4 KiB: fits
    assert set(found) == {"t0", "t1", "t2"}


async def test_a_reply_announcing_more_than_its_limit_is_refused_unread(
    api: ScriptedApi, origin: str
) -> None:
    huge = reply(
        "POST /bygheartsong/api/query_result",
        body=streamed(b"{", b" " * 65536, 300 * MiB),
        content_length=300 * MiB,
    )
    with MisbehavingProxy(origin, huge) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ReplyTooLarge) as info:
                await client.query([TASK_A])
    assert f"the reply announces {300 * MiB} bytes, over the limit of 1.5 MiB" in str(info.value)


async def test_a_gzip_bomb_reply_is_refused_at_the_limit_of_its_decoded_size(
    api: ScriptedApi, origin: str
) -> None:
    bomb = reply(
        "POST /bygheartsong/api/query_result",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        body=deflate_bomb(2560 * MiB, prefix=b'{"code":200,"data":"'),
    )
    with MisbehavingProxy(origin, bomb) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(ReplyTooLarge, match=r"ran past 1\.5 MiB"):
                await client.query([TASK_A])
    assert bomb.sent < 64 * MiB


async def test_a_compressed_reply_within_its_limit_is_read_as_usual(
    api: ScriptedApi, origin: str
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    with MisbehavingProxy(origin, Rule("POST /bygheartsong/api/query_result", "gzip")) as proxy:
        async with client_for(proxy.origin) as client:
            found = await client.query([TASK_A])
    assert found[TASK_A].state is TaskState.SUCCEEDED
    assert api.calls("/query_result")[0].headers["accept-encoding"] == "gzip, deflate"


async def test_a_submit_reply_past_its_limit_is_an_unknown_outcome_never_resent(
    api: ScriptedApi, origin: str
) -> None:
    body = json.dumps(envelope({"task_id": "t", "padding": "p" * 4096}))
    limits = ReplyLimits(submit_bytes=1024)
    with MisbehavingProxy(origin, json_reply(body, match="/release_task")) as proxy:
        async with client_for(proxy.origin, reply_limits=limits) as client:
            with pytest.raises(TransientError) as info:
                await client.submit({"prompt": "x"})
            assert client.requests_made["submit"] == 1
    assert info.value.outcome_unknown and info.value.status == 200
    message = str(info.value)
    assert "the reply announces" in message
    assert "over the limit of 1 KiB for a submit reply: refused unread" in message
    assert message.endswith("(the task may or may not exist)")


@pytest.mark.parametrize(
    ("call", "match", "kind"),
    [
        ("create_sample", "/v1/create_sample", "a helper's draft"),
        ("format_input", "/format_input", "a helper's draft"),
        ("create_random_sample", "/create_random_sample", "a helper's draft"),
        ("health", "/health", "a status reply"),
        ("stats", "/v1/stats", "a status reply"),
        ("probe", "/v1/stats", "a status reply"),
        ("models", "/v1/models", "a status reply"),
    ],
)
async def test_every_other_reply_has_its_limit_too(
    api: ScriptedApi, origin: str, call: str, match: str, kind: str
) -> None:
    endless = reply(match, body=streamed(b'{"data":"', b"y" * 65536, 64 * MiB))
    limits = ReplyLimits(helper_bytes=256 * 1024, status_bytes=128 * 1024)
    args: dict[str, tuple[Any, ...]] = {"create_sample": ("a song",), "format_input": ("s", "l")}
    with MisbehavingProxy(origin, endless) as proxy:
        async with client_for(proxy.origin, reply_limits=limits, retry=FAST) as client:
            with anyio.fail_after(HANG), pytest.raises(ReplyTooLarge) as info:
                await getattr(client, call)(*args.get(call, ()))
    size = "256 KiB" if "helper" in kind else "128 KiB"
    assert f"the reply ran past {size}, over the limit of {size} for {kind}" in str(info.value)
    assert endless.hits == 1 and endless.sent < 32 * MiB


async def test_a_huge_error_reply_is_read_only_for_its_message(
    api: ScriptedApi, origin: str
) -> None:
    busy = reply(
        "POST /bygheartsong/api/query_result",
        status=503,
        body=streamed(b"upstream busy ", b"z" * 65536, 100 * MiB),
    )
    with MisbehavingProxy(origin, busy) as proxy:
        async with client_for(proxy.origin) as client:
            with anyio.fail_after(HANG), pytest.raises(TransientError) as info:
                await client.query([TASK_A])
            assert client.requests_made["query"] == FAST.attempts  # retried as a 503 is
    assert "HTTP 503: upstream busy zzz" in str(info.value)
    assert len(str(info.value)) < 400 and busy.sent < 64 * MiB


async def test_a_reply_in_an_encoding_never_asked_for_is_refused(
    api: ScriptedApi, origin: str
) -> None:
    rule = json_reply(b"\x1b" * 100, match="/health", headers={"Content-Encoding": "zstd"})
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError, match="encoded as 'zstd'"):
                await client.health()


# -- 5. a reply nested 100,000 deep (or unreadable) is a protocol error with a reason -----


async def test_a_submit_reply_nested_100000_deep_is_an_unknown_outcome(
    api: ScriptedApi, origin: str
) -> None:
    body = '{"code": 200, "data": ' + nested(DEEP) + "}"
    with MisbehavingProxy(origin, json_reply(body, match="/release_task")) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(TransientError) as info:
                await client.submit({"prompt": "x"})
            assert client.requests_made["submit"] == 1
    assert info.value.outcome_unknown
    assert "POST /release_task: HTTP 200: the reply is nested too deeply to read" in str(info.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"code": 200, "data": ' + nested(DEEP) + "}", "nested too deeply to read"),
        ('{"code": 200, "data": ' + nested(500) + "}", "nested more than 64 levels deep"),
        (
            json.dumps(envelope([{"task_id": TASK_A, "status": 1, "result": nested(DEEP, "{}")}])),
            "`result`: the reply is nested too deeply to read",
        ),
        ('{"code": 200, "data": [', "reply is not JSON"),
        ("\xff\xfe not even text", "reply is not JSON"),
    ],
    ids=["deep", "over-64", "deep-result-string", "cut-json", "not-text"],
)
async def test_an_unreadable_poll_reply_is_a_protocol_error(
    api: ScriptedApi, origin: str, body: str, reason: str
) -> None:
    rule = json_reply(body.encode("latin-1"), match="/query_result")
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError) as info:
                await client.query([TASK_A])
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ("create_sample", "/v1/create_sample"),
        ("health", "/health"),
        ("probe", "/v1/stats"),
        ("models", "/v1/models"),
    ],
)
async def test_deep_replies_to_helpers_and_status_calls_are_protocol_errors(
    api: ScriptedApi, origin: str, call: str, match: str
) -> None:
    rule = json_reply('{"data": ' + nested(DEEP) + "}", match=match)
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError, match="nested too deeply"):
                await getattr(client, call)(*(("a song",) if call == "create_sample" else ()))


async def test_a_deep_error_reply_still_says_its_status(api: ScriptedApi, origin: str) -> None:
    rule = json_reply(nested(DEEP), match="/release_task", status=400)
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(RejectedError) as info:
                await client.submit({"prompt": "x"})
    assert str(info.value).startswith("POST /release_task: HTTP 400: [[[[")
    assert len(str(info.value)) < 400


async def test_a_result_file_with_control_characters_is_refused_not_raised(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """httpx raises InvalidURL (no httpx.HTTPError) for such a `file`: it was an
    exception escaping the client."""
    async with client_for(origin) as client:
        with pytest.raises(RefusedAudioUrl, match="is not a valid URL"):
            await client.download("/v1/audio?path=a\x00\x1b[2Jb.mp3", tmp_path / "s")
    assert api.requests == []


async def test_a_key_no_header_can_carry_is_an_auth_error_not_an_escaping_exception(
    api: ScriptedApi, origin: str
) -> None:
    """A curly quote pasted into the key: httpx raised UnicodeEncodeError, which the
    engine's submit task did not catch (the job stayed `submitting`)."""
    async with scripted_client(origin + PREFIX, KEY + "\u2019") as client:
        with pytest.raises(AuthError, match="only printable ASCII"):
            await client.submit({"prompt": "x"})
        with pytest.raises(AuthError, match="only printable ASCII"):
            await client.query([TASK_A])
    assert api.requests == []


async def test_a_submit_reply_nested_100000_deep_never_strands_the_job(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """Through the engine: the job leaves `submitting` with the reason, at once."""
    rule = json_reply('{"code": 200, "data": ' + nested(DEEP) + "}", match="/release_task")
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await runtime.service.submit_file(song(tmp_path, "deep.txt", title="Deep"))
            job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
    assert job.status is JobStatus.FAILED, job.reason
    assert "submission outcome unknown" in (job.reason or "")
    assert "nested too deeply to read" in (job.reason or "")


# -- 6. a Content-Length that lies short never gives a wrong take -----------------------


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
async def test_a_content_length_lying_short_is_refused_then_fetched_whole(
    api: ScriptedApi, origin: str, tmp_path: Path, takes: dict[str, bytes], fmt: str
) -> None:
    whole = takes[fmt]
    server_path = api.add_audio(f"take.{fmt}", whole)
    lie = Rule(AUDIO, "lie_length", content_length=100, times=1)
    with MisbehavingProxy(origin, lie) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError) as info:
                await client.download(audio_ref(server_path), tmp_path / "song", seconds=2)
            assert leftovers(tmp_path) == []  # nothing kept, no part to resume wrongly
            got = await client.download(audio_ref(server_path), tmp_path / "song", seconds=2)
    message = str(info.value)
    assert "the file is incomplete: " in message
    assert "(got 100 bytes, all the server announced): refused" in message
    assert not isinstance(info.value, RejectedError | TransientError)  # held, retried later
    assert got.path.read_bytes() == whole and got.sha256 == hashlib.sha256(whole).hexdigest()


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
async def test_a_take_cut_anywhere_is_refused(
    api: ScriptedApi, origin: str, tmp_path: Path, takes: dict[str, bytes], fmt: str
) -> None:
    whole = takes[fmt]
    server_path = api.add_audio(f"cut.{fmt}", whole)
    lie = Rule(AUDIO, "lie_length", content_length=len(whole) * 2 // 3)
    with MisbehavingProxy(origin, lie) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError, match="the file is incomplete: "):
                await client.download(audio_ref(server_path), tmp_path / "song")
    assert leftovers(tmp_path) == []


def cuts(data: bytes) -> Iterator[int]:
    step = max(1, len(data) // 97)
    yield from (13, 100, 1000)
    yield from range(step, len(data) - 1, step)
    yield len(data) - 1


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_the_light_check_passes_whole_takes_and_finds_every_cut(
    takes: dict[str, bytes], fmt: str
) -> None:
    whole = takes[fmt]
    ext = sniff_audio_ext(whole[:64])
    assert ext is not None and incomplete_bytes(whole, ext) is None
    missed = [n for n in cuts(whole) if incomplete_bytes(whole[:n], ext) is None]
    assert missed == []


def test_the_light_check_reads_mp4_boxes() -> None:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    whole = box(b"ftyp", b"M4A \x00\x00\x02\x00") + box(b"mdat", bytes(5000)) + box(b"moov", b"x")
    assert sniff_audio_ext(whole[:64]) == ".m4a"
    assert incomplete_bytes(whole, ".m4a") is None
    assert "'mdat' box promises 5008 bytes" in (incomplete_bytes(whole[:3000], ".m4a") or "")
    assert "no 'moov' box" in (incomplete_bytes(whole[:-9], ".m4a") or "")


def test_files_that_promise_no_length_pass_for_the_quality_plugin_to_judge() -> None:
    """Streams written without a length, and the simulator's undecodable takes (an ID3
    tag and nothing, a bare Ogg header page): nothing in them is cut short."""
    assert incomplete_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4096), ".mp3") is None
    assert incomplete_bytes(b"fLaC\x00\x00\x00\x22" + bytes(200), ".flac") is None
    ogg = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead" + bytes(4096)
    assert incomplete_bytes(ogg, ".opus") is None
    assert incomplete_bytes(WAV_HEAD + bytes(1000), ".wav") is None  # data size unset


async def test_a_short_take_is_never_marked_done_through_the_engine(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The first download is cut to 100 bytes by a lying Content-Length: the job is held
    with the reason, the download starts again, and the take kept is the whole file."""
    lie = Rule("GET /v1/audio", "lie_length", content_length=100, times=1)
    with MisbehavingProxy(simulator.base_url, lie) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await runtime.service.submit_file(song(tmp_path, "short.txt", title="Short"))
            job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
            history = await runtime.store.history(job.id)
    assert job.status is JobStatus.DONE, job.reason
    held = [e.reason or "" for e in history if e.to_status == "held"]
    assert len(held) == 1 and held[0].startswith("download failed: GET /v1/audio?path=")
    assert "the file is incomplete" in held[0] and "(got 100 bytes" in held[0]
    [kept] = job.files
    assert kept.size > 100 and kept.path.stat().st_size == kept.size
    assert soundfile.info(str(kept.path)).frames > 0
    assert lie.hits == 1


def test_every_refusal_is_a_bygheartd_error() -> None:
    for kind in (DownloadTooLarge, ReplyTooLarge, RefusedAudioUrl, ProtocolError):
        assert issubclass(kind, BygheartdError)
    assert issubclass(DownloadTooLarge, RefusedAudioUrl)  # "cannot download the audio: ..."
