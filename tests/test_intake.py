"""Intake: one stable inbox file becomes exactly one job (archived) or a rejection (failed/)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig

from bygheartd.config import Config
from bygheartd.folders.moves import (
    copy_no_clobber,
    error_note_path,
    fit_name,
    unique_path,
    write_new_text,
)
from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.runtime import open_service
from bygheartd.service.service import SongService
from bygheartd.service.submission import DropIdentity, Submission
from bygheartd.watch.intake import Intake, drop_identity

pytestmark = pytest.mark.anyio

SONG = b"---\ntitle: Night Drive\nstyle: synthwave\n---\n[Verse]\nlights on the highway\n"


@dataclass
class Drop:
    config: Config
    service: SongService
    intake: Intake

    @property
    def inbox(self) -> Path:
        return self.config.folders.inbox

    @property
    def archive(self) -> Path:
        return self.config.folders.archive

    @property
    def failed(self) -> Path:
        return self.config.folders.failed

    def put(self, name: str, data: bytes = SONG) -> Path:
        path = self.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    async def jobs(self) -> list[Job]:
        return await self.service.list()

    def note(self, name: str) -> str:
        return (self.failed / f"{name}.error.txt").read_text(encoding="utf-8")


@pytest.fixture
async def drop(make_config: Any) -> AsyncIterator[Drop]:
    config = make_config(
        **{"presets.demo": {"model": "bygheart-melody-fast"}, "presets.ballad": {"bpm": 70}}
    )
    service = open_service(config)
    try:
        yield Drop(config, service, Intake(config, service))
    finally:
        await service.close()


@asynccontextmanager
async def _intake(config: Config) -> AsyncIterator[tuple[Intake, SongService]]:
    service = open_service(config)
    try:
        yield Intake(config, service), service
    finally:
        await service.close()


@pytest.fixture
async def intake(make_config: MakeConfig) -> AsyncIterator[tuple[Intake, SongService]]:
    async with _intake(make_config()) as taken:
        yield taken


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A folder on another file system than tmp_path (tmpfs), for cross-device moves."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev:
        pytest.skip("needs /dev/shm on another file system than /tmp")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="bygheartd-intake-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_valid_file_becomes_a_queued_job_and_moves_to_archive_unchanged(drop: Drop) -> None:
    path = drop.put("night.txt")
    outcome = await drop.intake.process(path)
    assert outcome.kind == "accepted"
    (job,) = await drop.jobs()
    assert job.status is JobStatus.QUEUED
    assert (job.origin, job.source, job.title) == ("drop", "night.txt", "Night Drive")
    assert job.archived_as == "night.txt"
    assert not path.exists()
    assert (drop.archive / "night.txt").read_bytes() == SONG
    assert await drop.service.source_path(job.id) == str(drop.archive / "night.txt")


async def test_file_without_title_is_named_after_its_stem(drop: Drop) -> None:
    await drop.intake.process(drop.put("rain song.txt", b"just some lyrics\n"))
    assert (await drop.jobs())[0].title == "rain song"


async def test_extension_matches_case_insensitively(drop: Drop) -> None:
    assert (await drop.intake.process(drop.put("LOUD.TXT"))).kind == "accepted"
    assert (await drop.intake.process(drop.put("meta.YAML", b"lyrics: hi\n"))).kind == "accepted"


async def test_preset_subfolder_applies_its_preset_and_mirrors_into_archive(drop: Drop) -> None:
    await drop.intake.process(drop.put("demo/quick.txt"))
    (job,) = await drop.jobs()
    assert job.model == "bygheart-melody-fast"
    assert job.source == "demo/quick.txt"
    assert (drop.archive / "demo" / "quick.txt").exists()


async def test_a_second_255_byte_name_and_its_note_never_replace_the_first(drop: Drop) -> None:
    name = "ж" * 125 + ".docx"  # 255 bytes
    assert (await drop.intake.process(drop.put(name, b"first"))).kind == "rejected"
    (first_note,) = drop.failed.glob("*.error.txt")
    # A user's file already sits where the second note would go first.
    second_move = unique_path(drop.failed, name)
    taken = error_note_path(second_move)
    taken.write_text("mine", encoding="utf-8")
    second = await drop.intake.process(drop.put(name, b"second"))
    assert second.kind == "rejected" and second.moved_to == second_move
    assert (drop.failed / name).read_bytes() == b"first"
    assert second_move.read_bytes() == b"second"
    assert taken.read_text(encoding="utf-8") == "mine"
    notes = sorted(drop.failed.glob("*.error*.txt"))
    assert len(notes) == 3 and all(len(os.fsencode(n.name)) <= 255 for n in notes)
    assert str(drop.failed / name) in first_note.read_text(encoding="utf-8")
    (second_note,) = [n for n in notes if n not in (first_note, taken)]
    # Its own note names the second file ("…-2"), and is numbered past the user's file.
    assert second_note.name.endswith("…-2.docx.error-2.txt")
    assert str(second_move) in second_note.read_text(encoding="utf-8")
    assert not list(drop.failed.glob(".*"))  # no temporary left behind


def test_a_failed_copy_of_a_255_byte_drop_and_its_note_fit(tmp_path: Path) -> None:
    """What the engine does when a drop fails later: copy the archived file to failed/ (its
    temporary too must fit) and write a note beside each copy."""
    archived = tmp_path / "archive" / ("é" * 125 + ".txt")  # 254 bytes
    archived.parent.mkdir()
    archived.write_text("lyrics", encoding="utf-8")
    failed = tmp_path / "failed"
    copies = [copy_no_clobber(archived, failed) for _ in range(2)]
    notes = [write_new_text(error_note_path(c), f"note of {c.name}") for c in copies]
    assert copies[0].name == archived.name and copies[1].name.endswith("…-2.txt")
    assert len({*copies, *notes}) == 4
    assert all(len(os.fsencode(p.name)) <= 255 for p in (*copies, *notes))
    assert [n.read_text(encoding="utf-8") for n in notes] == [f"note of {c.name}" for c in copies]
    assert sorted(os.listdir(failed)) == sorted(p.name for p in (*copies, *notes))


@pytest.mark.parametrize(
    ("text", "limit", "kept"),
    [
        ("東京の夜", 7, "東京"),  # 3 bytes a character: never half of one
        ("東京の夜", 5, "東"),
        ("cafe\u0301s", 5, "caf"),  # not an "e" without its accent
        ("cafe\u0301s", 6, "cafe\u0301"),
        ("plain", 10, "plain"),
    ],
)
def test_names_are_cut_between_characters(text: str, limit: int, kept: str) -> None:
    assert fit_name(text, limit) == kept


async def test_unknown_preset_folder_is_rejected_with_the_nearest_preset(drop: Drop) -> None:
    outcome = await drop.intake.process(drop.put("dem/quick.txt"))
    assert outcome.kind == "rejected"
    assert await drop.jobs() == []
    note = drop.note("dem/quick.txt")
    assert "no [presets.dem]" in note and "did you mean 'demo'?" in note
    assert (drop.failed / "dem" / "quick.txt").read_bytes() == SONG
    # Dropped again where the note says, it would be accepted: the preset's folder, not dem/.
    assert f"inbox again ({(drop.inbox / 'demo').as_posix()}/)" in note
    assert "dem/)" not in note
    await drop.intake.process(drop.put("xyzzy/quick.txt"))  # nothing near: the top level
    assert f"inbox again ({drop.inbox.as_posix()}/)" in drop.note("xyzzy/quick.txt")


async def test_other_extension_is_rejected_listing_the_supported_formats(drop: Drop) -> None:
    await drop.intake.process(drop.put("song.docx", b"PK\x03\x04"))
    note = drop.note("song.docx")
    assert "is not a song file (extension '.docx')" in note
    assert ".txt, .md, .lyrics, .yaml, .yml, .toml, .json" in note
    assert note.count("again") == 1, note  # the re-drop said once, at the end


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.txt",
        "song.txt~",
        "song.tmp",
        "song.txt.part",
        ".song.txt.swp",
        "song.txt.crdownload",
        ".~lock.song.txt#",
        "._song.txt",
        ".stfolder",
        ".stversions/song.txt",
        "@eaDir/song.txt",
        "__MACOSX/song.txt",
        "Thumbs.db",
        "desktop.ini",
        "song.sync-conflict-20240101-120000-ABCDEF.txt",
        "song.txt.error.txt",
        "take.wav",
    ],
)
async def test_ignored_files_are_left_alone(drop: Drop, name: str) -> None:
    path = drop.put(name)
    assert (await drop.intake.process(path)).kind == "ignored"
    assert path.exists() and await drop.jobs() == []


async def test_watch_ignore_patterns_extend_the_builtin_rules(make_config: Any) -> None:
    config = make_config(watch={"ignore": ["*.bak.txt", "drafts/*"]})
    async with _intake(config) as (intake, _service):
        for name in ("x.bak.txt", "drafts/y.txt", "song.tmp"):
            path = config.folders.inbox / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(SONG)
            assert (await intake.process(path)).kind == "ignored"


async def test_a_second_event_for_an_accepted_file_makes_no_second_job(drop: Drop) -> None:
    path = drop.put("a.txt")
    assert (await drop.intake.process(path)).kind == "accepted"
    assert (await drop.intake.process(path)).kind == "gone"
    assert len(await drop.jobs()) == 1


async def test_the_same_file_taken_twice_at_once_makes_one_job(drop: Drop) -> None:
    path = drop.put("a.txt")
    outcomes = await asyncio.gather(drop.intake.process(path), drop.intake.process(path))
    assert sorted(o.kind for o in outcomes) == ["accepted", "gone"]
    assert len(await drop.jobs()) == 1
    assert (drop.archive / "a.txt").read_bytes() == SONG
    assert not any(drop.failed.iterdir())  # the second look found it gone, not a duplicate


async def test_identical_files_taken_at_once_make_one_job_and_one_duplicate(drop: Drop) -> None:
    first, second = drop.put("a.txt"), drop.put("b.txt")
    outcomes = await asyncio.gather(drop.intake.process(first), drop.intake.process(second))
    assert sorted(o.kind for o in outcomes) == ["accepted", "rejected"]
    (job,) = await drop.jobs()
    (rejected,) = [o for o in outcomes if o.kind == "rejected"]
    assert rejected.moved_to is not None and rejected.moved_to.parent == drop.failed
    assert f"job {job.id}" in drop.note(rejected.moved_to.name)


async def test_two_intakes_over_two_stores_take_each_file_once(drop: Drop) -> None:
    """Two processes' worth (the inbox lock keeps a second daemon away; the store's unique
    drop identity is what makes it exactly-once even so)."""
    other = open_service(drop.config)
    try:
        second = Intake(drop.config, other)
        paths = [drop.put(f"song-{n}.txt", SONG + f"take {n}\n".encode()) for n in range(10)]
        for path in paths:
            await asyncio.gather(drop.intake.process(path), second.process(path))
        jobs = await drop.jobs()
        assert sorted(job.source or "" for job in jobs) == sorted(p.name for p in paths)
        assert not any(drop.inbox.iterdir())
    finally:
        await other.close()


async def test_crash_between_insert_and_move_only_finishes_the_move(drop: Drop) -> None:
    path = drop.put("a.txt")
    info = path.stat()
    content = hashlib.sha256(SONG).hexdigest()
    identity = drop_identity("a.txt", info.st_size, info.st_mtime_ns, content)
    # The state a crash leaves behind: the job is committed, the file is still in the inbox.
    request = drop.service.build_request({"lyrics": "lights on the highway"})
    submission = Submission(
        request, Origin.DROP, source="a.txt", drop=DropIdentity(identity, content, "")
    )
    first = (await drop.service.submit(submission)).job
    outcome = await drop.intake.process(path)
    assert outcome.kind == "recovered" and outcome.job_id == first.id
    (job,) = await drop.jobs()
    assert job.archived_as == "a.txt" and (drop.archive / "a.txt").exists()


async def test_archive_name_is_recorded_before_the_move_and_a_crash_finishes_it(drop: Drop) -> None:
    (drop.archive / "a.txt").write_text("an older song of the same name")
    path = drop.put("a.txt")
    info = path.stat()
    content = hashlib.sha256(SONG).hexdigest()
    identity = drop_identity("a.txt", info.st_size, info.st_mtime_ns, content)
    # A crash right after the insert: the planned name is on the job, the file in the inbox.
    request = drop.service.build_request({"lyrics": "lights on the highway"})
    submission = Submission(
        request, Origin.DROP, source="a.txt", drop=DropIdentity(identity, content, "a-2.txt")
    )
    first = (await drop.service.submit(submission)).job
    outcome = await drop.intake.process(path)
    assert outcome.kind == "recovered" and outcome.job_id == first.id
    (job,) = await drop.jobs()
    assert job.archived_as == "a-2.txt"
    assert (drop.archive / "a-2.txt").read_bytes() == SONG
    assert (drop.archive / "a.txt").read_text() == "an older song of the same name"


async def test_accepted_drop_names_its_archive_copy_even_after_a_clash(drop: Drop) -> None:
    (drop.archive / "a.txt").write_text("an older song of the same name")
    assert (await drop.intake.process(drop.put("a.txt"))).kind == "accepted"
    (job,) = await drop.jobs()
    assert job.archived_as == "a-2.txt" and (drop.archive / "a-2.txt").read_bytes() == SONG


async def test_identical_redrop_is_skipped_to_failed_naming_the_job(drop: Drop) -> None:
    await drop.intake.process(drop.put("a.txt"))
    (job,) = await drop.jobs()
    outcome = await drop.intake.process(drop.put("b.txt"))
    assert outcome.kind == "rejected"
    assert len(await drop.jobs()) == 1
    note = drop.note("b.txt")
    assert f"job {job.id}" in note and 'on_duplicate = "allow"' in note


async def test_redrop_with_preserved_mtime_is_a_duplicate_not_a_recovery(drop: Drop) -> None:
    path = drop.put("a.txt")
    stamp = path.stat().st_mtime_ns
    await drop.intake.process(path)
    path = drop.put("a.txt")
    os.utime(path, ns=(stamp, stamp))  # a sync tool re-delivering the very same file
    assert (await drop.intake.process(path)).kind == "rejected"
    assert len(await drop.jobs()) == 1
    assert (drop.failed / "a.txt").exists()


async def test_on_duplicate_allow_makes_a_new_job_even_with_the_same_identity(
    make_config: Any,
) -> None:
    config = make_config(watch={"on_duplicate": "allow"})
    async with _intake(config) as (intake, service):
        path = config.folders.inbox / "a.txt"
        path.write_bytes(SONG)
        stamp = path.stat().st_mtime_ns
        await intake.process(path)
        path.write_bytes(SONG)
        os.utime(path, ns=(stamp, stamp))
        assert (await intake.process(path)).kind == "accepted"
        assert len(await service.list()) == 2
        assert (config.folders.archive / "a-2.txt").exists()


async def test_redrop_after_the_first_job_failed_makes_a_new_job(drop: Drop) -> None:
    await drop.intake.process(drop.put("a.txt"))
    (job,) = await drop.jobs()
    await drop.service.cancel(job.id)
    assert (await drop.intake.process(drop.put("a.txt"))).kind == "accepted"
    assert len(await drop.jobs()) == 2


async def test_same_bytes_in_another_preset_folder_is_not_a_duplicate(drop: Drop) -> None:
    await drop.intake.process(drop.put("a.txt"))
    assert (await drop.intake.process(drop.put("demo/a.txt"))).kind == "accepted"


async def test_fixed_file_dropped_back_is_accepted(drop: Drop) -> None:
    await drop.intake.process(drop.put("fix.txt", b"---\nbpm: 500\n---\nla\n"))
    assert (drop.failed / "fix.txt").exists()
    fixed = (drop.failed / "fix.txt").read_bytes().replace(b"500", b"120")
    assert (await drop.intake.process(drop.put("fix.txt", fixed))).kind == "accepted"
    assert (await drop.jobs())[0].request["bpm"] == 120


async def test_name_clashes_in_failed_get_a_suffix_and_their_own_note(drop: Drop) -> None:
    await drop.intake.process(drop.put("bad.txt", b""))
    await drop.intake.process(drop.put("bad.txt", b"---\nbpm: 1\n---\nla\n"))
    assert "is empty" in drop.note("bad.txt")
    assert "bpm 1 is below" in drop.note("bad-2.txt")


async def test_symlink_pointing_outside_the_inbox_is_rejected_not_followed(
    drop: Drop, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret lyrics\n")
    link = drop.inbox / "link.txt"
    link.symlink_to(secret)
    assert (await drop.intake.process(link)).kind == "rejected"
    assert await drop.jobs() == []
    assert (drop.failed / "link.txt").is_symlink()
    assert "symbolic link" in drop.note("link.txt") and "outside the inbox" in drop.note("link.txt")
    assert secret.read_text() == "top secret lyrics\n"


async def test_a_symlink_rejected_across_file_systems_stays_a_link_and_copies_nothing(
    make_config: MakeConfig, other_fs: Path, tmp_path: Path
) -> None:
    config = make_config(folders={"failed": str(other_fs / "failed")})
    secret = tmp_path / "api-key"
    secret.write_text("bgh_live_do_not_copy_me\n")
    async with _intake(config) as (take, service):
        link = take.inbox / "song.txt"
        link.symlink_to(secret)
        assert (await take.process(link)).kind == "rejected"
        assert await service.list() == []
    moved = other_fs / "failed" / "song.txt"
    assert moved.is_symlink() and os.readlink(moved) == str(secret)
    assert not link.exists() and not link.is_symlink()
    texts = [p.read_bytes() for p in (other_fs / "failed").iterdir() if not p.is_symlink()]
    assert all(b"do_not_copy_me" not in text for text in texts)
    assert "symbolic link" in (other_fs / "failed" / "song.txt.error.txt").read_text()


async def test_a_symlink_loop_in_the_inbox_is_rejected_not_stuck(
    intake: tuple[Intake, SongService],
) -> None:
    take, _service = intake
    (take.inbox / "b.txt").symlink_to("a.txt")
    (take.inbox / "a.txt").symlink_to("b.txt")
    assert (await take.process(take.inbox / "a.txt")).kind == "rejected"
    assert "symbolic link" in (take.config.folders.failed / "a.txt.error.txt").read_text()
    assert (take.config.folders.failed / "a.txt").is_symlink()


async def test_huge_file_is_rejected_unread(drop: Drop) -> None:
    path = drop.inbox / "huge.txt"
    with open(path, "wb") as fh:
        fh.truncate(8 * 1024**3)  # sparse: reading or hashing it would take many seconds
    assert (await drop.intake.process(path)).kind == "rejected"
    assert "over the limit of 262144 bytes" in drop.note("huge.txt")


async def test_source_audio_outside_the_inbox_is_rejected(drop: Drop, tmp_path: Path) -> None:
    text = b"---\ntask_type: cover\nsource_audio: ../../outside.wav\n---\nla\n"
    await drop.intake.process(drop.put("cover.txt", text))
    assert "Where: line 3, key 'source_audio'" in drop.note("cover.txt")
    assert "inside the song file's folder" in drop.note("cover.txt")


async def test_source_audio_linked_to_outside_the_inbox_is_rejected(
    drop: Drop, tmp_path: Path
) -> None:
    (tmp_path / "private.wav").write_bytes(b"RIFF")
    (drop.inbox / "take.wav").symlink_to(tmp_path / "private.wav")
    text = b"---\ntask_type: cover\nsource_audio: take.wav\n---\nla\n"
    await drop.intake.process(drop.put("cover.txt", text))
    assert "source_audio 'take.wav' points outside the inbox" in drop.note("cover.txt")
    assert await drop.jobs() == []


async def test_source_audio_that_is_a_symlink_loop_is_rejected_not_stuck(
    intake: tuple[Intake, SongService],
) -> None:
    take, _service = intake
    (take.inbox / "x.wav").symlink_to("y.wav")
    (take.inbox / "y.wav").symlink_to("x.wav")
    song = take.inbox / "cover.txt"
    song.write_bytes(b"---\ntask_type: cover\nsource_audio: x.wav\n---\nla\n")
    outcome = await take.process(song)
    assert outcome.kind in ("rejected", "accepted")
    assert not song.exists()


async def test_source_audio_is_copied_beside_the_archived_song(drop: Drop) -> None:
    (drop.inbox / "take.wav").write_bytes(b"RIFF....WAVE")
    await drop.intake.process(
        drop.put("cover.txt", b"---\ntask_type: cover\nsource_audio: take.wav\n---\nla\n")
    )
    (job,) = await drop.jobs()
    assert (drop.archive / "take.wav").read_bytes() == b"RIFF....WAVE"
    assert (drop.inbox / "take.wav").exists()  # audio is never consumed
    assert await drop.service.source_path(job.id) == str(drop.archive / "cover.txt")


async def test_traversal_in_a_title_stays_a_title(drop: Drop) -> None:
    await drop.intake.process(drop.put("t.txt", b"---\ntitle: ../../etc/passwd\n---\nla\n"))
    (job,) = await drop.jobs()
    assert job.title == "../../etc/passwd"
    assert (drop.archive / "t.txt").exists()
    assert not (drop.inbox.parent / "etc").exists()


async def test_non_ascii_file_names_are_accepted(drop: Drop) -> None:
    await drop.intake.process(drop.put("ночь – 夜.txt"))
    (job,) = await drop.jobs()
    assert job.source == "ночь – 夜.txt"
    assert (drop.archive / "ночь – 夜.txt").exists()


async def test_a_file_whose_name_is_not_utf8_goes_to_failed_with_a_note(
    intake: tuple[Intake, SongService],
) -> None:
    take, service = intake
    inbox, failed = take.inbox, take.config.folders.failed
    raw = b"caf\xe9.txt"  # Latin-1 from an old Samba client: not UTF-8
    (inbox / os.fsdecode(raw)).write_bytes(SONG)
    outcome = await take.process(inbox / os.fsdecode(raw))
    assert outcome.kind == "rejected"
    assert await service.list() == []
    assert os.listdir(os.fsencode(inbox)) == []
    assert sorted(os.listdir(os.fsencode(failed))) == [raw, raw + b".error.txt"]
    note = (failed / os.fsdecode(raw + b".error.txt")).read_text(encoding="utf-8")
    assert "UTF-8" in note and "rename" in note


async def test_a_drop_of_a_file_already_submitted_from_the_command_line_is_a_duplicate(
    drop: Drop, tmp_path: Path
) -> None:
    # The quick start once paid twice: `bygheartd submit song.txt`, then the same file
    # dropped into the inbox. The drop is the duplicate now ([watch] on_duplicate).
    song = tmp_path / "midnight.txt"
    song.write_bytes(SONG)
    submitted = await drop.service.submit_file(song)
    outcome = await drop.intake.process(drop.put("midnight.txt"))
    assert outcome.kind == "rejected"
    note = drop.note("midnight.txt")
    assert f"the file that made job {submitted.id}" in note and "with bygheartd submit" in note
    assert [j.id for j in await drop.jobs()] == [submitted.id]
    # In a preset's folder the same bytes make another song: not a duplicate.
    assert (await drop.intake.process(drop.put("demo/midnight.txt"))).kind == "accepted"
