"""A corpus of malformed drops: each lands in failed/ with an error note that says exactly why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bygheartd.runtime import open_service
from bygheartd.watch.intake import Intake


def fm(body: str, lyrics: str = "la la la\n") -> bytes:
    return f"---\n{body}\n---\n{lyrics}".encode()


# name, bytes, phrases the error note must contain ("Where: ..." pins line and key)
CORPUS: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("looks like a binary file",)),
    ("nul.md", b"verse one\nla\x00la\n", ("contains NUL bytes", "Where: line 2")),
    ("latin1.txt", "café au lait\n".encode("latin-1"), ("is not valid UTF-8 (byte 0xe9)",)),
    ("utf16.txt", "hello".encode("utf-16"), ("is UTF-16 text", "save it as UTF-8")),
    ("empty.txt", b"", ("is empty",)),
    ("blank.lyrics", b"   \n\n\t\n", ("is empty",)),
    ("broken.yaml", b"title: [unclosed\n", ("not valid YAML", "Where: line 1")),
    ("broken.toml", b"title = \n", ("not valid TOML", "Where: line 1")),
    ("broken.json", b'{"title": }', ("not valid JSON", "Where: line 1")),
    ("list.json", b"[1, 2]", ("not a list",)),
    ("scalar.yml", b"42\n", ("must be a table",)),
    ("unclosed.md", b"---\ntitle: x\nla la\n", ("has no closing '---' line",)),
    ("nolyrics.txt", b"---\ntitle: quiet\n---\n", ("there are no lyrics",)),
    ("bpm-high.txt", fm("bpm: 500"), ("bpm 500 is above the maximum of 200", "key 'bpm'")),
    ("bpm-low.txt", fm("bpm: 5"), ("bpm 5 is below the minimum of 30", "Where: line 2")),
    ("dur-high.txt", fm("duration: 700"), ("duration 700 is above the maximum of 600",)),
    ("dur-low.txt", fm("duration: 2"), ("duration 2 is below the minimum of 10",)),
    ("takes-high.txt", fm("takes: 9"), ("takes 9 is above the maximum of 8", "key 'takes'")),
    ("takes-zero.txt", fm("takes: 0"), ("takes 0 is below the minimum of 1",)),
    ("ts.txt", fm("time_signature: 5"), ("time_signature '5' is not supported",)),
    ("key.txt", fm("key: H major"), ("key 'H major' is not a key",)),
    ("lang.txt", fm("language: klingon"), ("unknown language 'klingon'",)),
    ("model.txt", fm("model: gpt-4"), ("unknown model 'gpt-4'", "bygheart-melody-fast")),
    ("format.txt", fm("audio_format: docx"), ("unknown audio_format 'docx'",)),
    ("seed.txt", fm("seed: abc"), ("seed must be a number, not 'abc'",)),
    ("seeds.txt", fm("seed: [1, 2, 3]\ntakes: 2"), ("seed lists 3 seeds, but takes is 2",)),
    ("steps.txt", fm("inference_steps: 1000"), ("inference_steps 1000 is above",)),
    ("guidance.txt", fm("guidance_scale: 100"), ("guidance_scale 100 is above the maximum",)),
    ("temp.txt", fm("lm_temperature: 9"), ("lm_temperature 9 is above the maximum of 2",)),
    ("topp.txt", fm("lm_top_p: 2"), ("lm_top_p 2 is above the maximum of 1",)),
    ("topk.txt", fm("lm_top_k: -5"), ("lm_top_k -5 is below the minimum of 0",)),
    ("cfg.txt", fm("lm_cfg_scale: 99"), ("lm_cfg_scale 99 is above the maximum of 10",)),
    ("repaint.txt", fm("repainting_start: -5"), ("repainting_start is only used by task_type",)),
    ("task.txt", fm("task_type: dance"), ("unknown task_type 'dance'",)),
    ("bool.txt", fm("instrumental: maybe"), ("instrumental must be true or false",)),
    ("instr.txt", fm("instrumental: true"), ("instrumental: true, but there are lyrics",)),
    ("unknown.txt", fm("tempo_bpm: 120"), ("unknown key 'tempo_bpm'", "did you mean 'bpm'?")),
    ("dupkey.yaml", b"bpm: 100\nbpm: 120\n", ("duplicate key 'bpm' (also on line 1)",)),
    ("style.txt", fm("style: " + "x" * 600), ("style is 600 characters, over the limit",)),
    ("lyrics.txt", b"la " * 2000, ("lyrics are 6000 characters, over the limit",)),
    ("cost.txt", fm("model: bygheart-studio-max\ntakes: 8"), ("more than the daily cap of 30",)),
    (
        "traversal.txt",
        fm("task_type: cover\nsource_audio: ../../../etc/passwd"),
        ("source_audio", "inside the song file's folder", "key 'source_audio'"),
    ),
    ("missing-audio.txt", fm("task_type: cover\nsource_audio: gone.wav"), ("does not exist",)),
    ("huge.txt", b"la\n" * 100_000, ("300000 bytes, over the limit of 262144 bytes",)),
    ("ünïcödé – 夜.txt", fm("bpm: 999"), ("bpm 999 is above",)),
    ("song.docx", b"PK\x03\x04", ("is not a song file (extension '.docx')", ".lyrics")),
    ("README", b"hello", ("is not a song file (no extension)",)),
]


@pytest.fixture
async def intake(make_config: Any) -> AsyncIterator[Intake]:
    config = make_config()
    service = open_service(config)
    try:
        yield Intake(config, service)
    finally:
        await service.close()


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "data", "phrases"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_malformed_file_is_rejected_with_a_precise_reason(
    intake: Intake, name: str, data: bytes, phrases: tuple[str, ...]
) -> None:
    inbox, failed = intake.config.folders.inbox, intake.config.folders.failed
    (inbox / name).write_bytes(data)
    outcome = await intake.process(inbox / name)
    assert outcome.kind == "rejected"
    assert not (inbox / name).exists()
    assert (failed / name).read_bytes() == data  # moved, never changed or deleted
    note = (failed / f"{name}.error.txt").read_text(encoding="utf-8")
    assert note.startswith(f"inbox/{name} was not accepted")
    assert "What is wrong: " in note and "drop the file into the inbox again" in note
    for phrase in phrases:
        assert phrase in note
    assert await intake.service.list() == []
