"""Property tests: whatever bytes, text or mapping arrives, the parser returns a request or
raises SongFileError/RequestError, never anything else; valid requests round-trip."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bygheartd import catalog
from bygheartd.errors import RequestError, SongFileError
from bygheartd.songs import fields
from bygheartd.songs.request import RequestRules, SongRequest, slugify
from bygheartd.songs.songfile import SUPPORTED_SUFFIXES, parse_song_bytes, parse_song_text

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(sorted(fields.CANONICAL)) | st.text(min_size=1, max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["auto", "4/4", "Am", "F# minor", "3:30", "no", "on", "English", "1,2"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=3),
)
MAPPINGS = st.dictionaries(KEYS, VALUES, max_size=8)


def parses_or_song_file_error(call: Any) -> SongRequest | None:
    try:
        result = call()
    except SongFileError:
        return None
    assert isinstance(result, SongRequest)
    return result


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUPPORTED_SUFFIXES))
def test_any_bytes_parse_or_raise_song_file_error(data: bytes, suffix: str) -> None:
    parses_or_song_file_error(lambda: parse_song_bytes(data, name="f" + suffix, suffix=suffix))


@FAST
@given(text=st.text(max_size=400), suffix=st.sampled_from(SUPPORTED_SUFFIXES))
def test_any_text_parses_or_raises_song_file_error(text: str, suffix: str) -> None:
    parses_or_song_file_error(lambda: parse_song_text(text, name="f" + suffix))


LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", KEYS, st.text(max_size=20)),
    st.builds(lambda k, v: f"{k} = {v}", KEYS, st.text(max_size=20)),
    st.text(max_size=20),
    st.sampled_from(["---", "+++", "- item", "  indented: x", "[table]", "'''", '"""', "&a *a"]),
)


@FAST
@given(
    fence=st.sampled_from(["---", "+++"]),
    lines=st.lists(LINE, max_size=8),
    close=st.booleans(),
    body=st.text(max_size=100),
)
def test_front_matter_shaped_text_parses_or_raises(
    fence: str, lines: list[str], close: bool, body: str
) -> None:
    text = "\n".join([fence, *lines, *([fence] if close else []), body])
    parses_or_song_file_error(lambda: parse_song_text(text, name="song.txt"))


@FAST
@given(mapping=MAPPINGS, fmt=st.sampled_from(["yaml", "json", "front"]))
def test_random_mappings_in_every_format_parse_or_raise(mapping: dict[str, Any], fmt: str) -> None:
    try:
        if fmt == "json":
            text, name = json.dumps(mapping), "song.json"
        elif fmt == "yaml":
            text, name = yaml.safe_dump(mapping, allow_unicode=True), "song.yaml"
        else:
            text, name = "---\n" + yaml.safe_dump(mapping) + "---\nla la\n", "song.txt"
    except (ValueError, yaml.YAMLError):
        return  # not representable in that format
    parses_or_song_file_error(lambda: parse_song_text(text, name=name))


@FAST
@given(mapping=MAPPINGS, backend=st.sampled_from(catalog.BACKENDS))
def test_build_returns_a_request_or_raises_request_error(
    mapping: dict[str, Any], backend: str
) -> None:
    with contextlib.suppress(RequestError):
        SongRequest.build(mapping, RequestRules(backend=backend))


GOOD = st.fixed_dictionaries(
    {"lyrics": st.text(min_size=1, max_size=200).filter(lambda s: s.strip() != "")},
    optional={
        "title": st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), max_size=40),
        "style": st.text(max_size=60),
        "bpm": st.integers(30, 200),
        "duration": st.integers(10, 600) | st.just("auto"),
        "key": st.sampled_from(catalog.key_scales()),
        "time_signature": st.sampled_from(["2", "3", "4", "6", "2/4", "3/4", "4/4", "6/8"]),
        "language": st.sampled_from(catalog.languages()),
        "takes": st.integers(1, 4),
        "model": st.sampled_from(list(catalog.HOSTED_MODELS)),
        "audio_format": st.sampled_from(catalog.audio_formats()),
    },
)


@FAST
@given(data=GOOD)
def test_valid_requests_round_trip_through_model_dump(data: dict[str, Any]) -> None:
    try:
        request = SongRequest.build(data)
    except RequestError:
        return  # e.g. lyrics that are only an instrumental marker or over the limit
    dumped = request.model_dump(mode="json", exclude_none=True)
    assert SongRequest.build(dumped) == request
    body = request.to_api_body()
    assert body["batch_size"] == request.takes
    assert "title" not in body


@FAST
@given(data=GOOD)
def test_text_file_and_yaml_file_give_the_same_request(data: dict[str, Any]) -> None:
    # YAML itself folds its extra line breaks (NEL, LS, PS) inside quoted scalars, so a value
    # holding one is not the same text in both forms: that is YAML, not our parser.
    assume(not any(ch in str(v) for v in data.values() for ch in "\x85\u2028\u2029"))
    lyrics = data.pop("lyrics")
    front = yaml.safe_dump(data, allow_unicode=True) if data else ""
    try:
        as_text = parse_song_text(f"---\n{front}---\n{lyrics}", name="a.txt")
    except SongFileError:
        return
    as_yaml = parse_song_text(yaml.safe_dump({**data, "lyrics": lyrics}), name="a.yaml")
    assert as_text == as_yaml


@FAST
@given(title=st.text(max_size=200))
def test_slugs_are_safe_file_name_stems(title: str) -> None:
    slug = slugify(title)
    assert re.fullmatch(r"([a-z0-9]+(-[a-z0-9]+)*)?", slug)
    assert len(slug) <= 80


@FAST
@given(key=st.sampled_from(catalog.key_scales()))
def test_every_acestep_key_scale_normalises_to_a_valid_one(key: str) -> None:
    assert SongRequest.build({"lyrics": "la", "key": key}).key in catalog.key_scales()
