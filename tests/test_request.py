"""SongRequest: normalisation of every field, the rules between fields, the API body, slugs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bygheartd import catalog
from bygheartd.errors import BygheartdError, RequestError
from bygheartd.songs.request import RequestRules, SongRequest, slugify

LYRICS = "[Verse]\nI got a new face in the rearview\n[Chorus]\nI go god mode after midnight"


def build(backend: str = "bygheart", /, **data: Any) -> SongRequest:
    data.setdefault("lyrics", LYRICS)
    return SongRequest.build(data, RequestRules(backend=backend), source="inbox/song.txt")


def error(backend: str = "bygheart", /, **data: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        build(backend, **data)
    return info.value


# --- keys -------------------------------------------------------------------------------


def test_unknown_key_names_the_key_and_suggests_the_nearest() -> None:
    err = error(tempo_bpm=120)
    assert str(err) == "inbox/song.txt: unknown key 'tempo_bpm': did you mean 'bpm'?"
    assert err.key == "tempo_bpm"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("stlye", "style"),
        ("lyric", "lyrics"),
        ("tempo", "bpm"),
        ("genre", "style"),
        ("song_title", "title"),
        ("audio_duraton", "audio_duration"),
        ("take", "takes"),
    ],
)
def test_unknown_key_suggestions(typo: str, suggestion: str) -> None:
    assert error(**{typo: 1}).hint == f"did you mean {suggestion!r}?"


def test_unknown_key_without_a_near_match_lists_the_valid_keys() -> None:
    err = error(zzz=1)
    assert err.hint is not None and "title, style, lyrics" in err.hint


@pytest.mark.parametrize(
    ("alias", "field", "value", "expected"),
    [
        ("prompt", "style", "dark pop", "dark pop"),
        ("caption", "style", "dark pop", "dark pop"),
        ("audio_duration", "duration", 180, 180.0),
        ("key_scale", "key", "C major", "C major"),
        ("keyscale", "key", "C major", "C major"),
        ("vocal_language", "language", "ja", "ja"),
        ("batch_size", "takes", 2, 2),
        ("lm_negative_prompt", "negative", "lo-fi", "lo-fi"),
        ("src_audio", "source_audio", "take.wav", "take.wav"),
        ("timesignature", "time_signature", 3, "3"),
    ],
)
def test_api_names_are_aliases(alias: str, field: str, value: Any, expected: Any) -> None:
    extra = {"task_type": "cover"} if field == "source_audio" else {}
    assert getattr(build(**{alias: value}, **extra), field) == expected


@pytest.mark.parametrize("spelling", ["Title", "TITLE", " title "])
def test_keys_are_case_insensitive(spelling: str) -> None:
    assert build(**{spelling: "Neon"}).title == "Neon"


@pytest.mark.parametrize("spelling", ["timeSignature", "time-signature", "Time Signature"])
def test_keys_accept_camel_case_dashes_and_spaces(spelling: str) -> None:
    assert build(**{spelling: "4/4"}).time_signature == "4"


def test_a_field_and_its_alias_together_are_an_error() -> None:
    err = error(style="a", prompt="b")
    assert str(err) == "inbox/song.txt: 'style' and 'prompt' both set style: keep one of them"


def test_a_key_in_two_spellings_is_an_error() -> None:
    assert "both set title" in str(error(title="a", Title="b"))


def test_a_non_string_key_is_an_error() -> None:
    with pytest.raises(RequestError, match="key 3 is not a name"):
        SongRequest.build({3: "x", "lyrics": "la"})  # type: ignore[dict-item]


def test_a_request_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(RequestError, match="must be a table of keys"):
        SongRequest.build(["lyrics"])  # type: ignore[arg-type]


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(RequestError, match="unknown backend 'suno'"):
        SongRequest.build({"lyrics": "la"}, RequestRules(backend="suno"))


def test_request_errors_are_bygheartd_errors() -> None:
    assert isinstance(error(bpm=1), BygheartdError)


# --- duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(180, 180.0), (10, 10.0), (600, 600.0), (95.5, 95.5), ("180", 180.0)],
        *[("3:30", 210.0), ("210s", 210.0), ("auto", "auto"), ("AUTO", "auto")],
        *[(0, "auto"), (-1, "auto")],
    ],
)
def test_duration_normalisation(value: Any, expected: Any) -> None:
    assert build(duration=value).duration == expected


def test_duration_below_ten_seconds_is_rejected_with_the_range() -> None:
    err = error(duration=5)
    assert err.reason == "duration 5 is below the minimum of 10 seconds"
    assert err.hint is not None and '"auto"' in err.hint


def test_duration_above_six_hundred_is_rejected() -> None:
    assert error(duration=700).reason == "duration 700 is above the maximum of 600 seconds"


@pytest.mark.parametrize("value", ["long", True, [180], float("nan"), float("inf")])
def test_duration_that_is_not_a_number_is_rejected(value: Any) -> None:
    assert "duration must be a" in error(duration=value).reason


def test_unset_duration_is_none() -> None:
    assert build().duration is None


# --- bpm --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(124, 124), ("124", 124), ("124 bpm", 124)])
def test_bpm_normalisation(value: Any, expected: int) -> None:
    assert build(bpm=value).bpm == expected


def test_bpm_auto_is_unset() -> None:
    assert build(bpm="auto").bpm is None


def test_hosted_bpm_above_200_is_rejected() -> None:
    err = error(bpm=240)
    assert err.reason == "bpm 240 is above the maximum of 200 on the hosted service"
    assert err.hint == "use 30 to 200, or leave bpm out"


def test_acestep_bpm_allows_up_to_300() -> None:
    assert build("acestep", bpm=280).bpm == 280
    assert "maximum of 300" in error("acestep", bpm=301).reason


def test_bpm_below_30_is_rejected() -> None:
    assert "below the minimum of 30" in error(bpm=20).reason


def test_fractional_bpm_is_rejected() -> None:
    assert error(bpm=120.5).reason == "bpm must be a whole number, not 120.5"


# --- key --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Am", "A minor"),
        ("am", "A minor"),
        ("C Major", "C major"),
        ("C major", "C major"),
        ("f# minor", "F# minor"),
        ("F#m", "F# minor"),
        ("Bb", "Bb major"),
        ("bb", "Bb major"),
        ("B♭ minor", "Bb minor"),
        ("C♯ major", "C# major"),
        ("Eb min", "Eb minor"),
        ("G maj", "G major"),
        ("F sharp minor", "F# minor"),
        ("D", "D major"),
        ("AM", "A major"),
    ],
)
def test_key_normalisation(value: str, expected: str) -> None:
    assert build(key=value).key == expected


def test_normalised_keys_are_valid_acestep_key_scales() -> None:
    assert build(key="f# minor").key in catalog.key_scales()


@pytest.mark.parametrize("value", ["H minor", "C dorian", "F##", "minor"])
def test_unknown_key_is_rejected_with_examples(value: str) -> None:
    err = error(key=value)
    assert err.reason == f"key {value!r} is not a key"
    assert err.hint is not None and "F# minor" in err.hint


def test_key_auto_is_unset() -> None:
    assert build(key="auto").key is None


# --- time signature ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(4, "4"), ("4", "4"), ("4/4", "4"), ("3/4", "3"), ("6/8", "6"), ("2/4", "2"), (3.0, "3")],
)
def test_time_signature_normalisation(value: Any, expected: str) -> None:
    assert build(time_signature=value).time_signature == expected


@pytest.mark.parametrize("value", ["5/4", 7, "12/8", "waltz"])
def test_unsupported_time_signature_lists_the_valid_ones(value: Any) -> None:
    err = error(time_signature=value)
    assert "is not supported" in err.reason
    assert err.hint == "use 2, 3, 4 or 6 (also written 2/4, 3/4, 4/4, 6/8)"


# --- language ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("en", "en"), ("EN", "en"), ("English", "en"), ("japanese", "ja"), ("Cantonese", "yue")],
        *[("Mandarin", "zh"), ("en-US", "en"), ("pt_BR", "pt"), ("unknown", "unknown")],
        *[("no", "no"), ("Norwegian", "no"), ("español", "es"), ("auto", "unknown")],
    ],
)
def test_language_normalisation(value: str, expected: str) -> None:
    assert build(language=value).language == expected


def test_every_listed_language_code_is_accepted() -> None:
    for code in catalog.languages():
        assert build(language=code).language == code


def test_unknown_language_suggests_the_nearest() -> None:
    err = error(language="englsh")
    assert err.reason == "unknown language 'englsh'"
    assert err.hint == "did you mean 'english'?"


# --- takes, seed ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 9, -1])
def test_takes_outside_one_to_eight_is_rejected(value: int) -> None:
    assert error(takes=value).hint == "use 1 to 8"


def test_seed_list_must_have_one_seed_per_take() -> None:
    err = error(takes=2, seed=[1, 2, 3])
    assert err.reason == "seed lists 3 seeds, but takes is 2"
    assert err.key == "seed"


def test_seed_list_with_matching_takes_is_kept() -> None:
    assert build(takes=3, seed=[7, 8, 9]).seed == [7, 8, 9]


def test_seed_string_in_api_form_becomes_a_list() -> None:
    assert build(takes=2, seed="42, 43").seed == [42, 43]


def test_single_seed_list_becomes_an_int() -> None:
    assert build(seed=[5]).seed == 5


def test_seed_minus_one_means_random() -> None:
    assert build(seed=-1).seed is None


@pytest.mark.parametrize("value", [-5, 2**40, "x", True, 1.5])
def test_invalid_seed_is_rejected(value: Any) -> None:
    assert error(seed=value).key == "seed"


def test_seed_with_use_random_seed_true_is_a_contradiction() -> None:
    assert "contradict" in error(seed=42, use_random_seed=True).reason


def test_pasted_api_random_seed_fields_are_accepted() -> None:
    assert build(seed=-1, use_random_seed=True).seed is None


# --- model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(catalog.HOSTED_MODELS))
def test_hosted_models_are_accepted(name: str) -> None:
    assert build(model=name).model == name


def test_model_names_are_case_insensitive_and_may_drop_the_prefix() -> None:
    assert build(model="Studio-Max").model == "bygheart-studio-max"


def test_unknown_hosted_model_suggests_the_nearest() -> None:
    err = error(model="bygheart-studio-prp")
    assert str(err) == (
        "inbox/song.txt: unknown model 'bygheart-studio-prp': did you mean 'bygheart-studio-pro'?"
    )


def test_acestep_model_on_the_hosted_backend_is_rejected() -> None:
    assert "is an ACE-Step model" in error(model="acestep-v15-turbo").reason


def test_hosted_model_on_acestep_is_rejected() -> None:
    assert "is a hosted Bygheart model" in error("acestep", model="bygheart-studio-pro").reason


def test_acestep_models_are_accepted_on_acestep() -> None:
    assert build("acestep", model="acestep-v15-sft").model == "acestep-v15-sft"


# --- formats, tasks, LM fields ----------------------------------------------------------


def test_audio_format_defaults_to_mp3_and_is_normalised() -> None:
    assert build().audio_format == "mp3"
    assert build(audio_format=".FLAC").audio_format == "flac"


def test_unknown_audio_format_suggests() -> None:
    assert error(audio_format="mp4").hint == "did you mean 'mp3'?"


def test_task_needing_source_audio_without_it_is_rejected() -> None:
    err = error(task_type="repaint")
    assert err.reason == "task_type repaint needs source_audio"


def test_source_audio_without_a_task_is_rejected() -> None:
    assert "only used by task_type" in error(source_audio="a.wav").reason


@pytest.mark.parametrize("path", ["/etc/passwd.wav", "../x.wav", "a/../../x.wav", "~/x.wav"])
def test_source_audio_must_stay_beside_the_song_file(path: str) -> None:
    err = error(task_type="cover", source_audio=path)
    assert "must be a path inside the song file's folder" in err.reason


def test_source_audio_must_be_audio() -> None:
    assert "is not an audio file" in error(task_type="cover", source_audio="notes.txt").reason


def test_extract_on_acestep_needs_a_base_model() -> None:
    err = error("acestep", task_type="extract", source_audio="a.wav")
    assert err.reason == "task_type extract needs a base model"
    assert err.hint is not None and "acestep-v15-base" in err.hint


def test_repainting_fields_need_a_repaint_task() -> None:
    assert "only used by task_type repaint" in error(repainting_start=3).reason


def test_repainting_end_must_follow_the_start() -> None:
    err = error(task_type="repaint", source_audio="a.wav", repainting_start=20, repainting_end=10)
    assert err.reason == "repainting_end 10.0 is not after repainting_start 20.0"


def test_repainting_end_zero_means_to_the_end() -> None:
    req = build(task_type="repaint", source_audio="a.wav", repainting_start=5, repainting_end=0)
    assert req.repainting_end == -1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("inference_steps", 0), ("guidance_scale", 50), ("lm_temperature", 3), ("lm_top_p", 1.5)],
)
def test_tuning_fields_are_range_checked(field: str, value: float) -> None:
    assert "is above" in error(**{field: value}).reason or "below" in error(**{field: value}).reason


def test_lm_model_path_accepts_a_size() -> None:
    assert build(lm_model_path="1.7B").lm_model_path == "acestep-5Hz-lm-1.7B"


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("off", False), (1, True)])
def test_booleans_accept_common_words(value: Any, expected: bool) -> None:
    assert build(thinking=value).thinking is expected


def test_boolean_nonsense_is_rejected() -> None:
    assert error(thinking="maybe").reason == "thinking must be true or false, not 'maybe'"


# --- text fields ------------------------------------------------------------------------


def test_instrumental_with_lyrics_is_rejected() -> None:
    err = error(instrumental=True)
    assert err.reason == "instrumental: true, but there are lyrics"
    assert err.key == "instrumental"


def test_instrumental_without_lyrics_sends_the_marker() -> None:
    req = build(instrumental=True, lyrics="")
    assert req.to_api_body()["lyrics"] == "[Instrumental]"


@pytest.mark.parametrize("marker", ["[Instrumental]", "[inst]", "  [INSTRUMENTAL]\n"])
def test_instrumental_marker_as_lyrics_means_instrumental(marker: str) -> None:
    req = build(lyrics=marker)
    assert req.instrumental is True and req.lyrics == ""


def test_no_lyrics_and_not_instrumental_is_rejected() -> None:
    err = error(lyrics="")
    assert err.reason == "there are no lyrics"
    assert err.hint is not None and "instrumental: true" in err.hint


def test_lyrics_over_the_limit_are_rejected_not_cut() -> None:
    err = error(lyrics="la " * 2000)
    assert err.reason == "lyrics are 6000 characters, over the limit of 4096"
    assert err.hint == "shorten them (nothing is cut automatically)"


def test_lyrics_at_the_limit_are_kept_whole() -> None:
    text = "x" * catalog.LYRICS_MAX_CHARS
    assert build(lyrics=text).lyrics == text


def test_style_over_the_limit_is_rejected() -> None:
    assert "over the limit of 512" in error(style="s" * 513).reason


def test_lyrics_keep_every_inner_line_exactly() -> None:
    text = "\n\n[Verse]  \n  indented line\t\n\n[Chorus]\nend  \n\n"
    assert build(lyrics=text).lyrics == "[Verse]  \n  indented line\t\n\n[Chorus]\nend  "


def test_lyrics_crlf_becomes_lf() -> None:
    assert build(lyrics="a\r\nb").lyrics == "a\nb"


@pytest.mark.parametrize("value", [42, ["a", "b"], {"verse": "a"}])
def test_non_text_lyrics_are_rejected(value: Any) -> None:
    assert error(lyrics=value).reason.startswith("lyrics must be text")


def test_numeric_title_becomes_text() -> None:
    assert build(title=1999).title == "1999"


def test_boolean_title_is_rejected_with_a_quote_hint() -> None:
    err = error(title=True)
    assert err.reason == "title must be text, not true"


@pytest.mark.parametrize("title", ["a\nb", "a\x1bb", "a\u202eb"])
def test_title_with_control_characters_is_rejected(title: str) -> None:
    assert "control character" in error(title=title).reason


def test_title_is_free_text_even_when_it_looks_like_a_path() -> None:
    assert build(title="../../etc/passwd").title == "../../etc/passwd"


def test_nul_in_text_is_rejected() -> None:
    assert error(style="a\x00b").reason == "style contains a NUL character"


# --- cost -------------------------------------------------------------------------------


def test_job_over_the_daily_cap_is_rejected() -> None:
    err = error(model="bygheart-composer-lab", takes=8)
    assert err.reason == (
        "this job costs 32 credits (bygheart-composer-lab: 4 × 8 takes),"
        " more than the daily cap of 30"
    )
    assert err.hint is not None and "at most 7 takes" in err.hint
    assert err.key == "takes"


def test_job_at_the_cap_is_accepted() -> None:
    assert build(model="bygheart-melody-fast", takes=8).credit_cost("bygheart") == 8


def test_cap_does_not_apply_to_acestep() -> None:
    assert build("acestep", takes=8).credit_cost("acestep") == 0


def test_cap_can_be_lifted() -> None:
    data = {"lyrics": "la", "model": "bygheart-studio-max", "takes": 8}
    assert SongRequest.build(data, RequestRules(max_job_credits=None)).credit_cost("bygheart") == 32


def test_credit_cost_of_the_default_model() -> None:
    assert build(takes=3).credit_cost("bygheart") == 6


# --- defaults ---------------------------------------------------------------------------


def test_defaults_fill_unset_keys() -> None:
    defaults = {"model": "bygheart-melody-fast", "style": "lo-fi", "language": "en", "takes": 2}
    req = SongRequest.build({"lyrics": "la"}, RequestRules(defaults=defaults))
    assert (req.model, req.style, req.language, req.takes) == (
        "bygheart-melody-fast",
        "lo-fi",
        "en",
        2,
    )


def test_file_values_win_over_defaults() -> None:
    req = SongRequest.build(
        {"lyrics": "la", "prompt": "jazz"}, RequestRules(defaults={"style": "lo-fi"})
    )
    assert req.style == "jazz"


def test_empty_string_default_means_not_set() -> None:
    req = SongRequest.build({"lyrics": "la"}, RequestRules(defaults={"model": "", "style": ""}))
    assert req.model is None and req.style == ""
    assert "model" not in req.to_api_body()


def test_null_in_the_data_lets_the_default_apply() -> None:
    req = SongRequest.build(
        {"lyrics": "la", "model": None}, RequestRules(defaults={"model": "melody-fast"})
    )
    assert req.model == "bygheart-melody-fast"


def test_invalid_default_says_it_comes_from_the_configuration() -> None:
    with pytest.raises(RequestError) as info:
        SongRequest.build({"lyrics": "la"}, RequestRules(defaults={"model": "studio-prp"}))
    assert "(from the configuration defaults)" in info.value.reason


# --- API body ---------------------------------------------------------------------------


def test_api_body_uses_ace_step_names() -> None:
    req = build(
        title="T",
        style="pop",
        model="bygheart-studio-pro",
        duration=180,
        bpm=124,
        key="F# minor",
        time_signature="4/4",
        language="English",
        negative="lo-fi",
    )
    assert req.to_api_body() == {
        "prompt": "pop",
        "lyrics": LYRICS,
        "model": "bygheart-studio-pro",
        "audio_duration": 180,
        "bpm": 124,
        "key_scale": "F# minor",
        "time_signature": "4",
        "vocal_language": "en",
        "lm_negative_prompt": "lo-fi",
        "audio_format": "mp3",
        "batch_size": 1,
        "seed": -1,
        "use_random_seed": True,
        "thinking": False,
        "use_format": False,
        "task_type": "text2music",
    }


def test_api_body_omits_auto_duration_and_unset_model() -> None:
    body = build(duration="auto").to_api_body()
    assert "audio_duration" not in body and "model" not in body


def test_api_body_always_has_batch_size() -> None:
    assert build(takes=3).to_api_body()["batch_size"] == 3


def test_api_body_seed_list_is_a_string_and_fixed() -> None:
    body = build(takes=2, seed=[1, 2]).to_api_body()
    assert (body["seed"], body["use_random_seed"]) == ("1,2", False)


def test_api_body_single_seed_is_an_int_and_fixed() -> None:
    body = build(seed=42).to_api_body()
    assert (body["seed"], body["use_random_seed"]) == (42, False)


def test_api_body_never_has_title_or_source_audio() -> None:
    body = build(title="T", task_type="cover", source_audio="a.wav").to_api_body()
    assert "title" not in body and "source_audio" not in body and "src_audio" not in body


def test_api_body_keeps_fractional_duration() -> None:
    assert build(duration=95.5).to_api_body()["audio_duration"] == 95.5


# --- round trip, identity ---------------------------------------------------------------


def test_model_dump_round_trips_through_build() -> None:
    req = build(title="T", duration="3:30", key="Am", seed=[1, 2], takes=2, bpm=90)
    again = SongRequest.build(req.model_dump(mode="json", exclude_none=True))
    assert again == req


def test_canonical_json_is_stable_across_spellings() -> None:
    a = build(style="pop", key="Am", time_signature="4/4", language="English")
    b = build(prompt="pop", key_scale="A minor", time_signature=4, vocal_language="en")
    assert a.canonical_json() == b.canonical_json()
    assert json.loads(a.canonical_json())["key"] == "A minor"


def test_with_changes_accepts_aliases_and_revalidates() -> None:
    req = build(style="pop", bpm=100)
    changed = req.with_changes({"prompt": "jazz", "bpm": None})
    assert (changed.style, changed.bpm) == ("jazz", None)
    with pytest.raises(RequestError, match="bpm 500 is above"):
        req.with_changes({"bpm": 500})


def test_request_is_frozen() -> None:
    req = build()
    with pytest.raises(Exception, match="frozen"):
        req.title = "x"  # type: ignore[misc]


def test_display_title_falls_back() -> None:
    assert build().display_title("song-abc") == "song-abc"
    assert build(title="Neon").display_title("x") == "Neon"


# --- slugify ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Midnight God Mode", "midnight-god-mode"),
        ("../../etc/passwd", "etc-passwd"),
        ("Don't Stop", "dont-stop"),
        ("Ça va — Straße", "ca-va-strasse"),
        ("Rock & Roll", "rock-and-roll"),
        ("  --hi--  ", "hi"),
        ("夜", "ye"),
        ("東京の夜", "dong-jing-no-ye"),
        ("Ünïcode — 東京", "unicode-dong-jing"),
        ("Привет мир", "privet-mir"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


@pytest.mark.parametrize(
    ("title", "source", "base"),
    [("東京の夜", "tokyo.txt", "dong-jing-no-ye"), ("!!!", "night/tokyo.txt", "tokyo")],
)
def test_a_title_that_folds_to_nothing_falls_back_to_the_file_name(
    tmp_path: Path, title: str, source: str, base: str
) -> None:
    from bygheartd.engine.naming import choose_base

    assert choose_base(tmp_path, title, "1m8sd1f4abcde", set(), source=source) == base
    assert choose_base(tmp_path, "!!!", "1m8sd1f4abcde", set()) == "song-1m8sd1f4"


def test_slug_is_at_most_80_characters_without_a_trailing_dash() -> None:
    slug = slugify("word " * 40)
    assert len(slug) <= 80 and not slug.endswith("-")
