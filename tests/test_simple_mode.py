"""Simple mode and the expert controls as a user writes them: song files and request keys in,
the `/release_task` body out, and every refusal in the friendly `where: what: fix` form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bygheartd.errors import RequestError, SongFileError
from bygheartd.jobs import Take, generated_song
from bygheartd.songs.request import RequestRules, SongRequest, title_from_description
from bygheartd.songs.songfile import parse_song_file, parse_song_text

DESCRIBED = "---\ndescription: a dreamy lo-fi song about rainy Tokyo nights\n---\n"


def build(data: dict[str, Any], **rules: Any) -> SongRequest:
    return SongRequest.build(data, RequestRules(**rules))


def refused(data: dict[str, Any], **rules: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        build(data, **rules)
    return caught.value


# -- Simple mode -------------------------------------------------------------------------


def test_a_description_alone_sends_sample_mode_with_thinking_and_no_lyrics() -> None:
    request = parse_song_text(DESCRIBED, name="rainy.md")
    body = request.to_api_body()
    assert request.simple_mode
    assert body["sample_mode"] is True
    assert body["sample_query"] == "a dreamy lo-fi song about rainy Tokyo nights"
    assert body["lyrics"] == "" and body["thinking"] is True
    assert request.warnings() == []  # no style is fine: the model picks it


@pytest.mark.parametrize("key", ["description", "sample_query", "desc", "Description"])
def test_every_spelling_of_description_is_simple_mode(key: str) -> None:
    assert build({key: "calm piano ballad"}).to_api_body()["sample_query"] == "calm piano ballad"


def test_thinking_false_in_the_request_wins_but_a_default_does_not() -> None:
    asked = build({"description": "calm piano ballad", "thinking": False})
    defaulted = build({"description": "calm piano ballad"}, defaults={"thinking": False})
    assert asked.to_api_body()["thinking"] is False
    assert defaulted.to_api_body()["thinking"] is True


def test_a_default_description_never_turns_a_lyrics_file_into_simple_mode() -> None:
    request = build({"lyrics": "[Verse]\nla la"}, defaults={"description": "anything"})
    assert not request.simple_mode and "sample_mode" not in request.to_api_body()


@pytest.mark.parametrize(
    ("description", "query"),
    [
        ("calm piano ballad", "calm piano ballad, instrumental"),
        ("calm piano ballad.", "calm piano ballad, instrumental"),
        ("an instrumental piano piece", "an instrumental piano piece"),
        ("pure music for a rainy day", "pure music for a rainy day"),
        ("a smoky jazz saxophone solo", "a smoky jazz saxophone solo"),
    ],
)
def test_instrumental_puts_the_hint_into_the_query_once(description: str, query: str) -> None:
    body = build({"description": description, "instrumental": True}).to_api_body()
    assert body["sample_query"] == query
    assert body["lyrics"] == "" and body["sample_mode"] is True


def test_description_and_lyrics_are_refused_with_pick_one() -> None:
    text = DESCRIBED.replace("---\n", "---\ntitle: Both\n", 1) + "[Verse]\nmy own words\n"
    with pytest.raises(SongFileError) as caught:
        parse_song_text(text, name="both.md")
    error = caught.value
    assert "pick one" in error.reason and error.key == "description" and error.line == 3
    assert "remove description" in (error.hint or "")
    assert str(error).startswith("both.md: line 3: description and lyrics are both given")


def test_pick_one_is_reported_together_with_other_problems() -> None:
    error = refused({"description": "x", "lyrics": "[Verse]\nla", "takes": 2, "seed": [1, 2, 3]})
    assert len(error.problems) == 2
    assert any("pick one" in p.reason for p in error.problems)


def test_simple_mode_is_refused_for_an_edit_task() -> None:
    error = refused({"description": "x", "task_type": "cover", "source_audio": "a.wav"})
    assert "task_type is cover" in error.reason and error.key == "description"


def test_a_body_less_file_without_description_says_how_to_fix_it() -> None:
    with pytest.raises(SongFileError) as caught:
        parse_song_text("---\ntitle: Empty\nstyle: pop\n---\n", name="empty.md")
    assert "there are no lyrics" in caught.value.reason
    assert "description:" in (caught.value.hint or "")


def test_a_too_long_description_is_refused_not_cut() -> None:
    error = refused({"description": "word " * 200})
    assert "over the limit of 512" in error.reason and error.key == "description"


@pytest.mark.parametrize(
    ("description", "title"),
    [
        (
            "a dreamy lo-fi song about rainy Tokyo nights, female vocals",
            "Dreamy Lo-Fi Song about Rainy Tokyo",
        ),
        ("The 80s synthwave anthem for LA drives", "80s Synthwave Anthem for LA Drives"),
        ("upbeat song of", "Upbeat Song"),
        ("calm piano ballad, instrumental", "Calm Piano Ballad"),
        # Cut before a phrase that would not fit, not inside it ("Leaving a Small").
        ("a bittersweet song about leaving a small town at dawn", "Bittersweet Song about Leaving"),
        ("東京の夜", "東京の夜"),
        ("", ""),
    ],
)
def test_titles_are_made_from_the_description(description: str, title: str) -> None:
    assert title_from_description(description) == title


def test_the_title_comes_from_front_matter_then_the_stem_then_the_description() -> None:
    described = build({"description": "a quiet harbour waltz at dawn"})
    titled = build({"description": "a quiet harbour waltz at dawn", "title": "Harbour"})
    assert titled.display_title("stem") == "Harbour"
    assert described.display_title("stem") == "stem"
    assert described.display_title("") == "Quiet Harbour Waltz at Dawn"
    assert build({"lyrics": "[Verse]\nla"}).display_title("") == ""  # then song-<id>


# -- what the model wrote ------------------------------------------------------------------


def test_generated_lists_what_the_model_wrote_only_when_it_differs() -> None:
    request = build({"description": "a quiet harbour waltz"}).model_dump(exclude_none=True)
    wrote = Take(
        file="/a.mp3",
        prompt="a quiet harbour waltz, warm strings",
        lyrics="[Verse 1]\nLanterns on the water",
        metas={
            "bpm": 92,
            "duration": 124.0,
            "keyscale": "D major",
            "timesignature": "3",
            "genres": "N/A",
        },
    )
    assert generated_song(request, (wrote,)) == {
        "style": "a quiet harbour waltz, warm strings",
        "lyrics": "[Verse 1]\nLanterns on the water",
        "bpm": 92,
        "key": "D major",
        "time_signature": "3",
        "duration": 124.0,
    }
    custom = build({"style": "pop", "lyrics": "[Verse]\nla la", "duration": 30})
    echoed = Take(
        file="/b.mp3",
        prompt="pop",
        lyrics="[Verse]\nla la",
        metas={"bpm": "N/A", "duration": 30.0, "keyscale": "N/A", "timesignature": "N/A"},
    )
    assert generated_song(custom.model_dump(exclude_none=True), (echoed,)) is None


# -- expert controls -------------------------------------------------------------------------

REPAINT = {"task_type": "repaint", "source_audio": "take.wav"}
COVER = {"task_type": "cover", "source_audio": "take.wav"}
BASE = {"model": "acestep-v15-base"}

ACCEPTED: list[tuple[dict[str, Any], str, Any, Any]] = [
    # (context keys, key as written, value as written, API field: value sent)
    (COVER, "cover_strength", "0.4", ("audio_cover_strength", 0.4)),
    (COVER, "audio_cover_strength", 1, ("audio_cover_strength", 1.0)),
    (COVER, "cover_noise", 0.2, ("cover_noise_strength", 0.2)),
    (REPAINT, "repaint_mode", "Aggressive", ("repaint_mode", "aggressive")),
    (REPAINT, "repaint_strength", 0.65, ("repaint_strength", 0.65)),
    (REPAINT, "repaint_crossfade_frames", "12", ("repaint_latent_crossfade_frames", 12)),
    (REPAINT, "repaint_wav_crossfade_sec", 0.25, ("repaint_wav_crossfade_sec", 0.25)),
    (
        {"task_type": "extract", "source_audio": "take.wav", **BASE},
        "track_name",
        "Backing Vocals",
        ("track_name", "backing_vocals"),
    ),
    (
        {"task_type": "complete", "source_audio": "take.wav", **BASE},
        "track_classes",
        "guitar, drums",
        ("track_classes", ["guitar", "drums"]),
    ),
    (
        {"task_type": "complete", "source_audio": "take.wav", **BASE},
        "instruments",
        ["Bass", "bass", "strings"],
        ("track_classes", ["bass", "strings"]),
    ),
    ({}, "lm_repetition_penalty", 1.2, ("lm_repetition_penalty", 1.2)),
    ({}, "use_cot_caption", "no", ("use_cot_caption", False)),
    ({}, "cot_language", True, ("use_cot_language", True)),
    ({}, "use_cot_metas", "off", ("use_cot_metas", False)),
    ({}, "infer_method", "SDE", ("infer_method", "sde")),
    ({}, "shift", "2.5", ("shift", 2.5)),
    ({}, "timesteps", "0.97, 0.76, 0.5, 0.28, 0", ("timesteps", "0.97,0.76,0.5,0.28,0")),
    ({}, "timesteps", [1, 0.5, 0], ("timesteps", "1,0.5,0")),
    ({}, "use_adg", "yes", ("use_adg", True)),
    ({}, "cfg_interval_start", 0.1, ("cfg_interval_start", 0.1)),
    ({}, "cfg_interval_end", "0.9", ("cfg_interval_end", 0.9)),
]


@pytest.mark.parametrize(("context", "key", "value", "sent"), ACCEPTED)
def test_expert_controls_are_normalised_and_sent_under_the_server_names(
    context: dict[str, Any], key: str, value: Any, sent: tuple[str, Any]
) -> None:
    lyrics = {} if context.get("task_type") else {"lyrics": "[Verse]\nla la"}
    request = build({**lyrics, **context, key: value}, backend="acestep")
    field, expected = sent
    assert request.to_api_body()[field] == expected


def test_unset_expert_controls_are_not_sent() -> None:
    body = build({"lyrics": "[Verse]\nla"}).to_api_body()
    assert not {"audio_cover_strength", "repaint_mode", "shift", "timesteps"} & set(body)


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    # (request, key named, words in the reason)
    ({**COVER, "cover_strength": 1.5}, "cover_strength", "above the maximum of 1"),
    ({**COVER, "cover_noise": -0.1}, "cover_noise", "below the minimum of 0"),
    ({**COVER, "cover_strength": "lots"}, "cover_strength", "must be a number"),
    ({**REPAINT, "repaint_mode": "wild"}, "repaint_mode", "unknown repaint_mode"),
    ({**REPAINT, "repaint_strength": 2}, "repaint_strength", "above the maximum of 1"),
    ({**REPAINT, "repaint_crossfade_frames": 2.5}, "repaint_crossfade_frames", "whole number"),
    ({**REPAINT, "repaint_crossfade_frames": 300}, "repaint_crossfade_frames", "maximum of 250"),
    ({**REPAINT, "repaint_crossfade_seconds": 30}, "repaint_crossfade_seconds", "maximum of 20"),
    (
        {**REPAINT, "repaint_mode": "aggressive", "repaint_strength": 0.5},
        "repaint_strength",
        "only used with repaint_mode balanced",
    ),
    ({"lyrics": "la", "cover_strength": 0.5}, "cover_strength", "only used by task_type cover"),
    ({"lyrics": "la", "repaint_mode": "balanced"}, "repaint_mode", "only used by task_type"),
    ({"lyrics": "la", "track_name": "drums"}, "track_name", "only used by task_type extract"),
    ({"lyrics": "la", "track_classes": ["drums"]}, "track_classes", "task_type complete"),
    (
        {"task_type": "extract", "source_audio": "a.wav", **BASE, "track_name": "kazoo"},
        "track_name",
        "unknown track 'kazoo'",
    ),
    (
        {"task_type": "complete", "source_audio": "a.wav", **BASE, "track_classes": {"a": 1}},
        "track_classes",
        "must be a list",
    ),
    ({"lyrics": "la", "lm_repetition_penalty": 0.5}, "lm_repetition_penalty", "minimum of 1"),
    ({"lyrics": "la", "lm_repetition_penalty": 3}, "lm_repetition_penalty", "maximum of 2"),
    ({"lyrics": "la", "use_cot_caption": "maybe"}, "use_cot_caption", "true or false"),
    ({"lyrics": "la", "infer_method": "euler"}, "infer_method", "unknown infer_method"),
    ({"lyrics": "la", "shift": 0.5}, "shift", "below the minimum of 1"),
    ({"lyrics": "la", "shift": 6}, "shift", "above the maximum of 5"),
    ({"lyrics": "la", "timesteps": "0.5, 0.7, 0"}, "timesteps", "must fall"),
    ({"lyrics": "la", "timesteps": "1.5, 0"}, "timesteps", "above the maximum of 1"),
    ({"lyrics": "la", "timesteps": "a, b"}, "timesteps", "must be a number"),
    ({"lyrics": "la", "use_adg": 2}, "use_adg", "true or false"),
    ({"lyrics": "la", "cfg_interval_start": 1.2}, "cfg_interval_start", "maximum of 1"),
    (
        {"lyrics": "la", "cfg_interval_start": 0.8, "cfg_interval_end": 0.3},
        "cfg_interval_start",
        "is not before cfg_interval_end",
    ),
    ({"lyrics": "la", "reference_audio": "../ref.wav"}, "reference_audio", "inside the song"),
    ({"lyrics": "la", "reference_audio": "ref.txt"}, "reference_audio", "not an audio file"),
]


@pytest.mark.parametrize(("data", "key", "words"), REFUSED)
def test_bad_expert_values_are_refused_before_anything_is_sent(
    data: dict[str, Any], key: str, words: str
) -> None:
    error = refused(data, backend="acestep")
    problems = error.problems or (error,)
    [problem] = [p for p in problems if p.key == key]
    assert words in problem.reason, problem.reason
    assert problem.hint  # every refusal says what to do


def test_reference_audio_must_exist_next_to_the_song_file(tmp_path: Path) -> None:
    song = tmp_path / "song.md"
    song.write_text("---\nstyle: pop\nreference_audio: ref.wav\n---\n[Verse]\nla la\n")
    with pytest.raises(SongFileError) as caught:
        parse_song_file(song)
    assert "reference_audio 'ref.wav' does not exist" in caught.value.reason
    assert caught.value.line == 3
    (tmp_path / "ref.wav").write_bytes(b"RIFF")
    assert parse_song_file(song).reference_audio == "ref.wav"
