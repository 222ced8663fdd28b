"""Song files: front matter formats, encodings, YAML quirks, and every error's wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from bygheartd.errors import RequestError, SongFileError
from bygheartd.songs.request import RequestRules
from bygheartd.songs.songfile import (
    SUPPORTED_SUFFIXES,
    parse_song_bytes,
    parse_song_file,
    parse_song_text,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def parse(text: str, name: str = "inbox/song.txt") -> dict[str, object]:
    request = parse_song_text(text, name=name)
    return request.model_dump(exclude_none=True, exclude_defaults=True)


def error(text: str, name: str = "inbox/song.txt") -> SongFileError:
    with pytest.raises(SongFileError) as info:
        parse_song_text(text, name=name)
    return info.value


# --- text files -------------------------------------------------------------------------


def test_design_example_parses() -> None:
    text = (
        "---\n"
        "title: Midnight God Mode\n"
        "style: female lead vocal, dark dance pop, stadium anthem, glossy radio production\n"
        "model: bygheart-studio-pro\n"
        'duration: 180          # seconds, 10-600, or "auto"\n'
        "bpm: 124               # 30-200\n"
        "key: F# minor\n"
        "time_signature: 4      # 2, 3, 4 or 6\n"
        "language: en\n"
        "instrumental: false\n"
        "takes: 1               # batch_size, 1-8\n"
        "seed: 42               # fixed seed; omit for random\n"
        "negative: acoustic, lo-fi\n"
        "---\n"
        "[Verse]\n"
        "I got a new face in the rearview\n"
        "[Chorus]\n"
        "I go god mode after midnight\n"
    )
    assert parse(text) == {
        "title": "Midnight God Mode",
        "style": "female lead vocal, dark dance pop, stadium anthem, glossy radio production",
        "model": "bygheart-studio-pro",
        "duration": 180.0,
        "bpm": 124,
        "key": "F# minor",
        "time_signature": "4",
        "language": "en",
        "seed": 42,
        "negative": "acoustic, lo-fi",
        "lyrics": (
            "[Verse]\nI got a new face in the rearview\n[Chorus]\nI go god mode after midnight"
        ),
    }


def test_text_without_front_matter_is_all_lyrics() -> None:
    assert parse("[Verse]\nhello\n") == {"lyrics": "[Verse]\nhello"}


def test_text_without_front_matter_takes_the_style_from_defaults() -> None:
    req = parse_song_text("la la", RequestRules(defaults={"style": "lo-fi"}), name="a.txt")
    assert req.style == "lo-fi"


def test_toml_front_matter() -> None:
    text = '+++\ntitle = "Neon"\nbpm = 120\nkey = "Am"\n+++\nla la\n'
    assert parse(text) == {"title": "Neon", "bpm": 120, "key": "A minor", "lyrics": "la la"}


def test_blank_lines_around_the_lyrics_are_dropped_and_inner_lines_kept() -> None:
    text = "---\ntitle: x\n---\n\n\n[Verse]  \n  one\n\n\ttwo\n\n\n"
    assert parse(text)["lyrics"] == "[Verse]  \n  one\n\n\ttwo"


def test_crlf_and_bom_are_normalised() -> None:
    data = "\ufeff---\r\ntitle: x\r\n---\r\nline one\r\nline two\r\n".encode()
    req = parse_song_bytes(data, name="a.txt", suffix=".txt")
    assert (req.title, req.lyrics) == ("x", "line one\nline two")


def test_empty_front_matter_is_allowed() -> None:
    assert parse("---\n---\nhello") == {"lyrics": "hello"}


def test_leading_blank_lines_before_the_fence_are_allowed() -> None:
    assert parse("\n\n---\ntitle: x\n---\nla")["title"] == "x"


def test_markdown_and_lyrics_suffixes_are_text_files() -> None:
    assert parse("---\ntitle: x\n---\nla", name="a.md")["title"] == "x"
    assert parse("la", name="a.lyrics")["lyrics"] == "la"


def test_front_matter_only_with_instrumental_is_a_song() -> None:
    assert parse("---\ninstrumental: true\nstyle: ambient\n---\n") == {
        "instrumental": True,
        "style": "ambient",
    }


# --- YAML quirks ------------------------------------------------------------------------


def test_yaml_norway_stays_norwegian() -> None:
    assert parse("---\nlanguage: no\n---\nla")["language"] == "no"


def test_yaml_sexagesimal_duration_is_minutes_and_seconds() -> None:
    assert parse("---\nduration: 3:30\n---\nla")["duration"] == 210.0


def test_yaml_on_yes_for_booleans() -> None:
    assert parse("---\nthinking: on\n---\nla")["thinking"] is True


def test_yaml_leading_zero_is_decimal_not_octal() -> None:
    assert parse("---\nseed: 017\n---\nla")["seed"] == 17


def test_yaml_numeric_title_stays_as_written() -> None:
    assert parse("---\ntitle: 1e3\n---\nla")["title"] == "1e3"


def test_yaml_boolean_looking_title_stays_text() -> None:
    assert parse("---\ntitle: Yes\n---\nla")["title"] == "Yes"


def test_yaml_sharp_key_is_not_a_comment() -> None:
    assert parse("---\nkey: F# minor\n---\nla")["key"] == "F# minor"


def test_yaml_date_title_stays_text() -> None:
    assert parse("---\ntitle: 2024-01-01\n---\nla")["title"] == "2024-01-01"


def test_yaml_time_signature_fraction() -> None:
    assert parse("---\ntime_signature: 6/8\n---\nla")["time_signature"] == "6"


def test_yaml_seed_list() -> None:
    assert parse("---\ntakes: 2\nseed: [1, 2]\n---\nla")["seed"] == [1, 2]


def test_yaml_null_value_is_unset() -> None:
    assert "title" not in parse("---\ntitle:\n---\nla")


def test_yaml_block_lyrics_in_a_yaml_file() -> None:
    text = "title: x\nlyrics: |\n  [Verse]\n  one\n\n  two\n"
    assert parse(text, name="a.yaml")["lyrics"] == "[Verse]\none\n\ntwo"


# --- structured files -------------------------------------------------------------------


def test_toml_file() -> None:
    text = 'title = "t"\nlyrics = """\n[Verse]\nhey\n"""\nlanguage = "Japanese"\n'
    assert parse(text, name="a.toml") == {"title": "t", "lyrics": "[Verse]\nhey", "language": "ja"}


def test_json_file() -> None:
    text = '{"title": "t", "lyrics": "la", "batch_size": 2}'
    assert parse(text, name="a.json") == {"title": "t", "lyrics": "la", "takes": 2}


def test_pasted_hosted_api_example_is_a_valid_json_song_file() -> None:
    text = (
        '{"prompt": "female lead vocal, epic modern pop", "lyrics": "[Verse]\\nI got a new face",'
        ' "model": "bygheart-studio-pro", "lm_model_path": "", "thinking": false,'
        ' "use_format": false, "vocal_language": "en", "audio_duration": 180,'
        ' "audio_format": "mp3", "batch_size": 1, "seed": -1, "use_random_seed": true,'
        ' "guidance_scale": 1.0, "task_type": "text2music"}'
    )
    req = parse_song_text(text, name="a.json")
    assert req.to_api_body()["prompt"] == "female lead vocal, epic modern pop"
    assert req.seed is None and req.guidance_scale == 1.0


def test_yml_suffix_is_yaml() -> None:
    assert parse("lyrics: la\n", name="a.yml") == {"lyrics": "la"}


# --- errors: keys and values, with lines ------------------------------------------------


def test_unknown_key_error_names_file_line_key_and_suggestion() -> None:
    err = error("---\ntitle: x\ntempo_bpm: 120\n---\nla")
    assert str(err) == "inbox/song.txt: line 3: unknown key 'tempo_bpm': did you mean 'bpm'?"
    assert (err.key, err.line) == ("tempo_bpm", 3)


def test_value_error_points_at_its_line() -> None:
    err = error("---\ntitle: x\n\nduration: 5\n---\nla")
    assert str(err).startswith("inbox/song.txt: line 4: duration 5 is below the minimum of 10")


def test_toml_value_error_points_at_its_line() -> None:
    err = error('+++\ntitle = "x"\nbpm = 500\n+++\nla')
    assert err.line == 3 and "bpm 500 is above" in err.reason


def test_json_value_error_points_at_its_line() -> None:
    err = error('{"lyrics": "la",\n"key": "H minor"}', name="a.json")
    assert (err.line, err.reason) == (2, "key 'H minor' is not a key")


def test_instrumental_with_body_lyrics_points_at_instrumental() -> None:
    err = error("---\ntitle: x\ninstrumental: true\n---\n[Verse]\nla")
    assert err.line == 3
    assert err.reason == "instrumental: true, but there are lyrics"


def test_lyrics_too_long_points_at_the_first_lyric_line() -> None:
    err = error("---\ntitle: x\n---\n\n" + "la\n" * 2000)
    assert err.line == 5 and "over the limit of 4096" in err.reason


def test_duplicate_yaml_key_is_an_error() -> None:
    err = error("---\nbpm: 120\nbpm: 130\n---\nla")
    assert (
        str(err) == "inbox/song.txt: line 3: duplicate key 'bpm' (also on line 2): keep one of them"
    )


def test_duplicate_json_key_is_an_error() -> None:
    assert error('{"lyrics": "a", "lyrics": "b"}', name="a.json").reason == "duplicate key 'lyrics'"


def test_alias_and_field_in_one_file_point_at_the_second() -> None:
    err = error("---\nstyle: a\nprompt: b\n---\nla")
    assert err.line == 3 and "both set style" in err.reason


def test_lyrics_in_front_matter_and_body_is_an_error() -> None:
    err = error("---\nlyrics: x\n---\nhello")
    assert (err.line, err.reason) == (2, "lyrics are given twice: in the front matter and after it")


def test_no_lyrics_is_an_error_with_the_fix() -> None:
    err = error("---\ntitle: x\n---\n")
    assert "there are no lyrics" in str(err) and "instrumental: true" in str(err)


def test_non_string_lyrics_in_yaml_is_an_error() -> None:
    err = error("lyrics:\n  - one\n  - two\n", name="a.yaml")
    assert err.reason == "lyrics must be text, not a list" and err.line == 1
    assert err.hint is not None and "lyrics: |" in err.hint


def test_non_string_lyrics_in_json_is_an_error() -> None:
    assert (
        error('{"lyrics": 42}', name="a.json").reason == "lyrics must be text, not a whole number"
    )


# --- errors: syntax ---------------------------------------------------------------------


def test_broken_yaml_reports_the_file_line() -> None:
    err = error("---\ntitle: x\nstyle: a: b\n---\nla")
    assert err.line == 3
    assert err.reason.startswith("the front matter is not valid YAML: mapping values")
    assert err.hint is not None and "quotes" in err.hint


def test_broken_toml_reports_the_file_line() -> None:
    err = error("+++\ntitle = x\n+++\nla")
    assert err.line == 2 and err.reason.startswith("the front matter is not valid TOML")


def test_broken_json_reports_the_line() -> None:
    err = error('{"title": "x",\n "lyrics": "la" "bpm": 1}', name="a.json")
    assert err.line == 2 and "is not valid JSON: Expecting ',' delimiter" in err.reason


def test_broken_yaml_file_says_file_not_front_matter() -> None:
    assert error("title: [x\n", name="a.yaml").reason.startswith("the file is not valid YAML")


def test_missing_closing_fence_is_an_error() -> None:
    err = error("---\ntitle: x\nla la\n")
    assert str(err) == (
        "inbox/song.txt: line 1: the front matter opened with '---' has no closing '---' line:"
        " add a line --- after the last key, before the lyrics"
    )


@pytest.mark.parametrize(
    ("text", "what"), [("---\n- a\n---\nla", "a list"), ("---\nhello\n---\nla", "plain text")]
)
def test_front_matter_that_is_not_a_mapping_is_an_error(text: str, what: str) -> None:
    assert f"must be a table of `key: value` lines, not {what}" in error(text).reason


def test_json_list_is_an_error() -> None:
    assert "not a list" in error("[1, 2]", name="a.json").reason


def test_yaml_python_tags_are_refused() -> None:
    err = error("---\ntitle: !!python/object:os.system x\n---\nla")
    assert "not valid YAML" in err.reason


def test_deeply_nested_json_is_an_error() -> None:
    assert (
        "nested too deeply"
        in error('{"lyrics": ' + "[" * 100000 + "]" * 100000 + "}", name="a.json").reason
    )


def test_empty_file_is_an_error() -> None:
    assert error("  \n\n").reason == "is empty"


def test_file_with_only_a_bom_is_empty() -> None:
    with pytest.raises(SongFileError, match="is empty"):
        parse_song_bytes(b"\xef\xbb\xbf", name="a.txt", suffix=".txt")


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(SongFileError) as info:
        parse_song_bytes(b"---\ntitle: x\n---\nla \xff la", name="a.txt", suffix=".txt")
    assert str(info.value) == "a.txt: line 4: is not valid UTF-8 (byte 0xff): save it as UTF-8"


def test_binary_file_is_an_error() -> None:
    with pytest.raises(SongFileError, match="looks like a binary file"):
        parse_song_bytes(b"ID3\x03\x00\x00", name="a.txt", suffix=".txt")


def test_utf16_file_is_an_error_with_the_fix() -> None:
    with pytest.raises(SongFileError, match="is UTF-16 text: save it as UTF-8"):
        parse_song_bytes("la".encode("utf-16"), name="a.txt", suffix=".txt")


def test_song_file_errors_are_request_errors() -> None:
    assert isinstance(error(""), RequestError)


# --- files on disk ----------------------------------------------------------------------


def test_parse_song_file_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("---\ntitle: x\n---\nla", encoding="utf-8")
    assert parse_song_file(path).title == "x"


def test_display_name_is_used_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("---\nbpm: 5\n---\nla", encoding="utf-8")
    with pytest.raises(SongFileError, match=r"^inbox/song.txt: line 2: bpm 5 is below"):
        parse_song_file(path, display_name="inbox/song.txt")


def test_oversized_file_is_rejected_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 2000)
    path.chmod(0)  # unreadable: the size check must come first
    try:
        with pytest.raises(SongFileError, match="is 2000 bytes, over the limit of 1024 bytes"):
            parse_song_file(path, max_bytes=1024)
    finally:
        path.chmod(0o644)


def test_unsupported_extension_lists_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "song.docx"
    path.write_bytes(b"x")
    with pytest.raises(SongFileError) as info:
        parse_song_file(path)
    assert "is not a song file (extension '.docx')" in str(info.value)
    assert ".txt, .md, .lyrics, .yaml, .yml, .toml, .json" in str(info.value)


def test_extensions_match_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "SONG.TXT"
    path.write_text("la", encoding="utf-8")
    assert parse_song_file(path).lyrics == "la"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SongFileError, match="does not exist"):
        parse_song_file(tmp_path / "gone.txt")


def test_directory_is_not_a_song_file(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(SongFileError, match="is a folder, not a song file"):
        parse_song_file(tmp_path / "dir.txt")
    (tmp_path / "songs").mkdir()  # no extension: still called a folder (audit F14)
    with pytest.raises(SongFileError, match="is a folder, not a song file") as info:
        parse_song_file(tmp_path / "songs")
    assert "no extension" not in str(info.value)


def test_source_audio_must_exist_beside_the_song_file(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("---\ntask_type: cover\nsource_audio: take.wav\n---\nla", encoding="utf-8")
    with pytest.raises(SongFileError) as info:
        parse_song_file(path)
    assert info.value.line == 3 and "'take.wav' does not exist" in info.value.reason
    (tmp_path / "take.wav").write_bytes(b"RIFF")
    assert parse_song_file(path).source_audio == "take.wav"


def test_backend_and_defaults_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("---\nbpm: 280\n---\nla", encoding="utf-8")
    req = parse_song_file(
        path, RequestRules(backend="acestep", defaults={"model": "acestep-v15-sft"})
    )
    assert (req.bpm, req.model) == (280, "acestep-v15-sft")


def test_supported_suffixes_match_the_design() -> None:
    assert SUPPORTED_SUFFIXES == (".txt", ".md", ".lyrics", ".yaml", ".yml", ".toml", ".json")


# --- examples ---------------------------------------------------------------------------


def test_examples_folder_has_song_files() -> None:
    assert len([p for p in EXAMPLES.iterdir() if p.suffix in SUPPORTED_SUFFIXES]) >= 5


@pytest.mark.parametrize(
    "path", sorted(p for p in EXAMPLES.iterdir() if p.suffix in SUPPORTED_SUFFIXES), ids=str
)
def test_every_example_is_valid_and_modest(path: Path) -> None:
    req = parse_song_file(path)
    assert req.title and req.credit_cost("bygheart") <= 4
