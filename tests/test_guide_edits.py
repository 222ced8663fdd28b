"""The guide's edit-task section (issue 27 item 7): its example song files are the ones in
`examples/edits/` and queue as the tasks they say, beside their audio; it names every track
name the server knows, and every edit key with when to use it."""

from __future__ import annotations

import re
import wave
from pathlib import Path

from bygheartd.songs import edits, fields
from bygheartd.songs.request import RequestRules
from bygheartd.songs.songfile import parse_song_file

REPO = Path(__file__).parents[1]
GUIDE = (REPO / "bygheartd" / "data" / "guide.md").read_text(encoding="utf-8")


def _section() -> str:
    start = GUIDE.index("### Edit tasks: build on a song you have")
    return GUIDE[start : GUIDE.index("\n## ", start)]


def _front(text: str) -> list[str]:
    """The front matter's lines without comments (the examples explain themselves)."""
    lines = [line.split(" #")[0].rstrip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#") and line != "---"]


def test_the_guides_edit_examples_are_the_example_files_and_queue_as_said(
    tmp_path: Path,
) -> None:
    section = _section()
    blocks = re.findall(r"```\n(---\n.*?)```", section, re.S)
    assert len(blocks) == 2
    extend, stems = blocks
    example = (REPO / "examples" / "edits" / "extend-night-drive.md").read_text()
    assert _front(extend) == _front(example)
    stems_file = (REPO / "examples" / "edits" / "stems-night-drive.yaml").read_text()
    assert _front(stems) == _front(stems_file)
    with wave.open(str(tmp_path / "night-drive.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(b"\0\0" * 22050 * 20)
    rules = RequestRules(backend="acestep")
    made = []
    for block in blocks:
        (tmp_path / "song.md").write_text(block.replace("night-drive.mp3", "night-drive.wav"))
        made.append(parse_song_file(tmp_path / "song.md", rules))
    longer = made[0].to_api_body()
    assert longer["task_type"] == "repaint"
    assert longer["repainting_end"] == 50.0  # 20 s + 30 s: the whole song, longer
    assert made[1].to_api_body()["task_type"] == "extract"
    assert made[1].stems == ["vocals", "drums", "bass"]


def test_the_guide_says_when_to_use_each_edit_and_names_every_track() -> None:
    section = _section()
    for key in edits.EDIT_KEYS:
        assert f"`{key}`" in section, key
    for words in ("task_type: repaint", "task_type: cover", "bygheartd describe"):
        assert words in section, words
    for track in fields.track_names():
        assert f"`{track}`" in section, track
    assert "costs three" in section  # one generation per stem, said up front
    assert "lora_path" in section and "bygheartd models" in section
