"""Fuzzing every parser of server replies (issue 30): whatever a server sends, what comes
out is a value or a clear bygheartd error (a BygheartdError), never another exception.

Covered: the poll entries and their double-encoded `result` (results.py), the helpers'
drafts (drafts.py), JSON from a server (jsonsafe.py), Content-Encoding (decoding.py), the
light check of downloaded audio (audiocheck.py), Retry-After, and the client end to end
(every endpoint and a download) over an in-memory transport answering with arbitrary
statuses, headers, encodings and bodies.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bygheartd.api.audiocheck import incomplete_bytes
from bygheartd.api.client import BygheartClient, DownloadLimits, ReplyLimits, RetryPolicy
from bygheartd.api.decoding import ContentDecoder
from bygheartd.api.download import resolve_audio_url
from bygheartd.api.drafts import Draft, parse_draft
from bygheartd.api.errors import ProtocolError, RefusedAudioUrl, parse_retry_after
from bygheartd.api.jsonsafe import read_json
from bygheartd.api.results import TaskResult, parse_task_entry, reported_seconds
from bygheartd.errors import BygheartdError

# BYGHEARTD_FUZZ_EXAMPLES=5000 for a longer hunt than the suite's.
EXAMPLES = int(os.environ.get("BYGHEARTD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["N/A", "30", "1", "²", "٣", " 2 ", "1e999", "-5", "nan", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


takes = st.fixed_dictionaries(
    {},
    optional={
        "file": values | st.sampled_from(["/v1/audio?path=%2Fa.mp3", "/srv/a.mp3", " "]),
        "seed_value": values,
        "metas": values | st.dictionaries(st.just("duration"), values, max_size=1),
        "prompt": values,
        "lyrics": values,
        "dit_model": values,
        "lm_model": values,
        "progress": values,
        "stage": values,
    },
)
results = (
    values
    | st.lists(takes, max_size=3).map(json.dumps)
    | st.lists(takes, max_size=3)
    | takes
    | st.integers(min_value=1, max_value=3000).map(deep)
    | st.text(max_size=40)
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "task_id": values,
        "status": values,
        "result": results,
        "progress_text": values,
    },
)


@FUZZ
@given(entries)
def test_a_poll_entry_is_a_result_or_a_protocol_error(entry: dict[str, Any]) -> None:
    try:
        found = parse_task_entry(entry)
    except ProtocolError:
        return
    assert isinstance(found, TaskResult)
    for take in found.outputs:
        seconds = reported_seconds(take.metas)
        assert seconds is None or seconds > 0


@FUZZ
@given(
    values
    | st.dictionaries(
        st.sampled_from(["caption", "lyrics", "bpm", "duration", "keyscale", "language"]), values
    )
)
def test_a_draft_is_read_or_none_never_an_exception(data: Any) -> None:
    draft = parse_draft(data)
    assert draft is None or (isinstance(draft, Draft) and isinstance(draft.as_dict(), dict))


json_texts = (
    st.binary(max_size=200)
    | values.map(lambda v: json.dumps(v).encode())
    | st.integers(min_value=1, max_value=200_000).map(lambda n: deep(n).encode())
    | st.integers(min_value=1, max_value=5000).map(lambda n: ("9" * n).encode())
    | st.integers(min_value=1, max_value=5000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode())
)


@FUZZ
@given(json_texts)
def test_json_from_a_server_is_a_value_or_a_value_error(content: bytes) -> None:
    with contextlib.suppress(ValueError):
        read_json(content)


@FUZZ
@given(json_texts | st.sampled_from([b"NaN", b"[Infinity, -Infinity]", b'{"a": 1e999}']))
def test_json_from_a_server_holds_no_number_strict_json_refuses(content: bytes) -> None:
    """NaN, Infinity and 1e999 read as null: what is read can always be stored."""
    try:
        value = read_json(content)
    except ValueError:
        return
    json.dumps(value, allow_nan=False)


@FUZZ
@given(
    st.text(max_size=60)
    | st.sampled_from(
        [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "1e999",
            "-1",
            "Sun, 31 Dec 99999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "٣",
        ]
    )
)
def test_retry_after_is_a_number_of_seconds_or_none(value: str) -> None:
    wait = parse_retry_after(value)
    assert wait is None or wait >= 0


codings = st.sampled_from(
    [
        "",
        "identity",
        "gzip",
        "deflate",
        "x-gzip",
        "br",
        "zstd",
        "gzip, gzip",
        "deflate, gzip",
        "gzip,gzip,gzip",
        "GZIP",
        " , ",
    ]
)


def encode(body: bytes, coding: str) -> bytes:
    for part in (p.strip().lower() for p in coding.split(",")):
        if part in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        elif part == "deflate":
            body = zlib.compress(body)
    return body


@FUZZ
@given(codings, st.binary(max_size=300), st.booleans(), st.integers(min_value=1, max_value=64))
def test_any_encoded_body_decodes_or_is_a_protocol_error(
    coding: str, body: bytes, valid: bool, split: int
) -> None:
    raw = encode(body, coding) if valid else body
    try:
        decoder = ContentDecoder.for_headers({"content-encoding": coding}, "GET /x")
        out = b"".join(
            piece
            for start in range(0, len(raw), split)
            for piece in decoder.feed(raw[start : start + split])
        )
        out += b"".join(decoder.finish())
    except ProtocolError:
        return
    if valid:
        assert out == body


MAGIC = {
    ".wav": b"RIFF\x24\x08\x00\x00WAVEfmt ",
    ".flac": b"fLaC\x00\x00\x00\x22",
    ".mp3": b"\xff\xfb\x94\x64",
    ".aac": b"\xff\xf1\x50\x80",
    ".ogg": b"OggS\x00\x02",
    ".opus": b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead",
    ".m4a": b"\x00\x00\x00\x20ftypM4A ",
}


@FUZZ
@given(st.sampled_from(sorted(MAGIC)), st.binary(max_size=3000), st.booleans())
def test_the_light_check_of_any_file_is_a_reason_or_none(ext: str, tail: bytes, id3: bool) -> None:
    head = MAGIC[ext]
    if id3 and ext == ".mp3":
        head = b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128) + head
    whole = head + tail
    for data in (whole, whole[: len(whole) // 2], whole[: len(tail) % len(whole) or 1]):
        problem = incomplete_bytes(data, ext)
        assert problem is None or isinstance(problem, str)


refs = (
    st.text(max_size=40)
    | st.text(max_size=40).map(lambda t: "/v1/audio?path=" + t)
    | st.text(max_size=40).map(lambda t: "http://api.test/" + t)
    | st.text(max_size=40).map(lambda t: "https://" + t)
)


@FUZZ
@given(refs)
def test_any_result_file_is_a_url_on_the_api_or_refused(ref: str) -> None:
    try:
        url = resolve_audio_url("http://api.test/base", ref)
    except RefusedAudioUrl:
        return
    assert url.host == "api.test"


# -- the client end to end -----------------------------------------------------------

statuses = st.sampled_from(
    [200, 200, 200, 201, 204, 206, 301, 302, 400, 401, 403, 404, 405, 408, 416, 429, 500, 502, 503]
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": values | st.sampled_from([200, 400, 429, 500, 503]),
        "data": values
        | st.lists(entries, max_size=3)
        | st.fixed_dictionaries({}, optional={"task_id": values, "queue_position": values}),
        "error": values,
        "message": values,
        "detail": values,
    },
)
bodies = (
    st.binary(max_size=300)
    | envelopes.map(lambda e: json.dumps(e).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.integers(min_value=60, max_value=100_000).map(
        lambda n: ('{"code": 200, "data": ' + deep(n) + "}").encode()
    )
    | st.sampled_from(list(MAGIC.values())).flatmap(
        lambda m: st.binary(max_size=400).map(lambda t: m + t)
    )
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(["application/json", "text/html", "audio/mpeg", ""]),
        "retry-after": st.text(
            alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30
        ),
        "location": st.sampled_from(
            ["/elsewhere", "http://other.example/x", "https://[::1", "::", "//x:99999/"]
        ),
        "content-range": st.sampled_from(
            ["bytes 0-9/10", "bytes 5-9/*", "bytes x", "bytes 0-1/99999999999999999999999"]
        ),
        "content-length": st.sampled_from(["1", "99999999999999999999999999", "²", "-1", "abc"]),
        "etag": st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=10),
    },
)


class Replies:
    """An in-memory server: every request is answered with the same drawn reply."""

    def __init__(self, status: int, head: dict[str, str], body: bytes, coding: str) -> None:
        self.status, self.head, self.coding = status, dict(head), coding
        self.body = encode(body, coding) if coding and body else body
        if coding:
            self.head["content-encoding"] = coding
            self.head.pop("content-length", None)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raw = [(k.encode(), v.encode("latin-1", "replace")) for k, v in self.head.items()]
        return httpx.Response(self.status, headers=raw, stream=httpx.ByteStream(self.body))


def client(replies: Replies) -> BygheartClient:
    return BygheartClient(
        "http://api.test/base",
        "bgh_fuzz",
        timeout=5,
        transport=httpx.MockTransport(replies),
        retry=RetryPolicy(attempts=1, base_delay=0, max_delay=0),
        reply_limits=ReplyLimits(poll_base_bytes=4096, poll_per_id_bytes=4096, helper_bytes=8192),
        download_limits=DownloadLimits(max_bytes=64 * 1024),
    )


CALLS: dict[str, Callable[[BygheartClient], Awaitable[Any]]] = {
    "submit": lambda c: c.submit({"prompt": "p", "lyrics": "l"}),
    "query": lambda c: c.query(["t1", "t2"]),
    "create_sample": lambda c: c.create_sample("a song"),
    "create_random_sample": lambda c: c.create_random_sample(),
    "format_input": lambda c: c.format_input("s", "l", params={"bpm": 90}),
    "health": lambda c: c.health(),
    "stats": lambda c: c.stats(),
    "probe": lambda c: c.probe(),
    "models": lambda c: c.models(),
}


def run_call(replies: Replies, call: Callable[[BygheartClient], Awaitable[Any]]) -> None:
    async def go() -> None:
        async with client(replies) as c:
            with contextlib.suppress(BygheartdError):
                await call(c)

    anyio.run(go)


@pytest.mark.parametrize("name", sorted(CALLS))
@FUZZ
@given(
    status=statuses,
    head=headers,
    body=bodies,
    coding=st.sampled_from(["", "", "gzip", "deflate", "br"]),
)
def test_every_endpoint_answers_a_value_or_a_bygheartd_error(
    name: str, status: int, head: dict[str, str], body: bytes, coding: str
) -> None:
    run_call(Replies(status, head, body, coding), CALLS[name])


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(
    ref=st.just("/v1/audio?path=%2Fa.mp3") | refs,
    status=statuses,
    head=headers,
    body=bodies,
    coding=st.sampled_from(["", "", "gzip", "deflate", "zstd"]),
)
def test_a_download_is_a_verified_file_or_a_bygheartd_error(
    ref: str, status: int, head: dict[str, str], body: bytes, coding: str
) -> None:
    replies = Replies(status, head, body, coding)

    async def go(folder: Path) -> None:
        async with client(replies) as c:
            try:
                got = await c.download(ref, folder / "song", seconds=10)
            except BygheartdError:
                assert [p.name for p in folder.iterdir() if p.suffix != ".part"] == []
                return
            assert got.path.exists() and got.size == got.path.stat().st_size

    with tempfile.TemporaryDirectory() as folder:
        anyio.run(go, Path(folder))
