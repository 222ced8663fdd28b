"""File moves that never lose or overwrite anything: unique names, no-clobber moves, notes.

Used by the drop folder (archive/, failed/) and the engine (failed copies of dropped songs).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import unicodedata
from pathlib import Path

from bygheartd.safetext import visible

NAME_MAX = 255  # bytes in one file name on Linux file systems, when the folder cannot say
NOTE_SUFFIX = ".error.txt"
SHORTENED = "\u2026"  # marks a name cut to fit: "…"
_KEPT_SUFFIX_BYTES = 32  # a longer "extension" is part of the name when a name is cut


def name_max(directory: Path) -> int:
    """The longest file name, in bytes, that `directory` (or the nearest existing parent, for
    a folder still to be made) accepts: 255 almost everywhere, less on a few (eCryptfs)."""
    for folder in (directory, *directory.parents):
        try:
            return int(os.pathconf(folder, "PC_NAME_MAX"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            break
    return NAME_MAX


def name_bytes(text: str) -> int:
    """How many bytes `text` takes as a file name (undecodable bytes count as one each)."""
    return len(os.fsencode(text))


def fit_name(text: str, limit: int) -> str:
    """The longest start of `text` that takes at most `limit` bytes as a file name, cut
    between characters: never inside a UTF-8 sequence, never between a letter and its
    combining accent."""
    size = 0
    for i, char in enumerate(text):
        size += name_bytes(char)
        if size > limit:
            while i > 0 and unicodedata.combining(text[i]):
                i -= 1
            return text[:i]
    return text


def _fitted(name: str, tail: str, limit: int) -> str:
    """`name` with `tail` put before its extension (`tail` after the whole name when the
    extension is unusually long), the stem cut and marked with "…" when that would not fit
    `limit` bytes."""
    suffix = Path(name).suffix
    whole = f"{name[: len(name) - len(suffix)]}{tail}{suffix}"
    if name_bytes(whole) <= limit:
        return whole
    if name_bytes(suffix) > _KEPT_SUFFIX_BYTES:
        suffix = ""
    stem = name[: len(name) - len(suffix)]
    # A name cut before (`…-2`) keeps what follows its mark: the note of `start…-2.txt` must
    # not come out as the note name of `start….txt`.
    head, marked, kept = stem.rpartition(SHORTENED)
    if not marked or name_bytes(kept) > _KEPT_SUFFIX_BYTES:
        head, kept = stem, ""
    end = f"{SHORTENED}{kept}{tail}{suffix}"
    return fit_name(head, limit - name_bytes(end)) + end


def unique_path(directory: Path, name: str) -> Path:
    """`name` in `directory`, or `stem-2.ext`, `stem-3.ext`, ... when taken. A name already
    at the file system's limit has its stem cut for the number, so that a second file of a
    255-byte name still finds a free name instead of failing with "File name too long"."""
    candidate = directory / name
    if not _exists(candidate):
        return candidate
    limit = name_max(directory)
    n = 2
    while True:
        candidate = directory / _fitted(name, f"-{n}", limit)
        if not _exists(candidate):
            return candidate
        n += 1


def _temp_path(path: Path, tag: str) -> Path:
    """The hidden sibling `.NAME.tag` written before the final link or rename. For a name
    near the limit it is cut, and a digest of the whole name keeps the temporaries of two
    long names that start alike apart."""
    name = f".{path.name}.{tag}"
    limit = name_max(path.parent)
    if name_bytes(name) <= limit:
        return path.with_name(name)
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    tail = f"~{digest}.{tag}"
    return path.with_name(f".{fit_name(path.name, limit - 1 - name_bytes(tail))}{tail}")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FolderUnavailable(OSError):
    """A configured folder (archive/, failed/) is missing and so is its parent: most likely
    a share that is not mounted. Nothing is written into the bare mount point (it would
    vanish under the share once it mounts); the caller waits for the folder or says so."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            errno.ENOENT,
            f"folder unavailable: {root} is missing and so is its parent {root.parent} "
            "(an unmounted share?); mount it or create the folder",
        )
        self.root = root

    def __str__(self) -> str:
        return str(self.strerror)


def prepare_folder(directory: Path, root: Path | None = None) -> None:
    """Make `directory` ready to write in. `root` is the configured folder it lies in
    (`directory` itself when not given): it is created only when its parent exists (never
    with its parents), and only then are the subfolders below it made. Raises
    `FolderUnavailable` for a root whose parent is missing."""
    root = directory if root is None else root
    if not directory.is_relative_to(root):
        raise ValueError(f"{directory} is not inside {root}")
    try:
        root.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise FolderUnavailable(root) from None
    directory.mkdir(parents=True, exist_ok=True)


def folder_available(root: Path) -> bool:
    """Whether `root` exists or can be made (its parent exists): see `prepare_folder`."""
    return root.is_dir() or root.parent.is_dir()


def move_no_clobber(
    src: Path, directory: Path, name: str | None = None, *, root: Path | None = None
) -> Path:
    """Move `src` into `directory` under a free name; never overwrites, never deletes.

    `root` is the configured folder `directory` lies in (see `prepare_folder`): a missing
    root whose parent is missing raises `FolderUnavailable` and `src` stays where it is.
    A hard link then unlink is atomic and refuses to replace; across file systems we copy,
    fsync, then remove the original only once the copy is safe.
    """
    prepare_folder(directory, root)
    while True:
        target = unique_path(directory, name or src.name)
        try:
            os.link(src, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            return _copy_then_remove(src, target)
        src.unlink()
        fsync_dir(directory)
        fsync_dir(src.parent)
        return target


def _copy_then_remove(src: Path, target: Path) -> Path:
    tmp = _temp_path(target, "moving")
    if src.is_symlink():  # a link moves as a link: never copy what it points at
        os.symlink(os.readlink(src), tmp)
        try:
            os.link(tmp, target, follow_symlinks=False)  # refuses to replace anything
        finally:
            tmp.unlink()
        src.unlink()
        return target
    shutil.copy2(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.link(tmp, target)
    tmp.unlink()
    fsync_dir(target.parent)
    src.unlink()
    return target


def copy_no_clobber(
    src: Path, directory: Path, name: str | None = None, *, root: Path | None = None
) -> Path:
    """Copy `src` into `directory` under a free name; `root` as for `move_no_clobber`."""
    prepare_folder(directory, root)
    while True:
        target = unique_path(directory, name or src.name)
        tmp = _temp_path(target, "copying")
        shutil.copy2(src, tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(directory)
        return target


def write_new_text(path: Path, text: str) -> Path:
    """Write a new file atomically (temp + fsync + rename); the caller chose a free name."""
    tmp = _temp_path(path, "tmp")
    _write_synced(tmp, text)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def _write_synced(path: Path, text: str, mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def error_note_path(moved: Path) -> Path:
    """A free name for the note beside a file in failed/: `NAME.error.txt`, then
    `NAME.error-2.txt`, ... when taken (a note never replaces a file).

    `NAME.error.txt` of a name near the file system's limit (255 bytes) cannot exist, so
    then the name's stem is cut (between characters) and marked "…", keeping its extension:
    `<start of the name>….txt.error.txt`. The note itself names the whole file.
    """
    limit = name_max(moved.parent)
    n = 1
    while True:
        mark = NOTE_SUFFIX if n == 1 else f".error-{n}.txt"
        name = moved.name + mark
        if name_bytes(name) > limit:
            name = _fitted(moved.name, "", limit - name_bytes(mark)) + mark
        candidate = moved.with_name(name)
        if not _exists(candidate):
            return candidate
        n += 1


def write_note(moved: Path, text: str) -> Path:
    """Write the note of `moved` (see `error_note_path`) and return where it went. The name
    is taken with a hard link, so a note appearing at the same moment is never replaced;
    where links are not supported it is created exclusively instead. A note quotes what a
    server, a song file or a plugin said, and people `cat` it: control characters are
    written as visible escapes, never as the terminal's instructions."""
    text = visible(text)
    while True:
        note = error_note_path(moved)
        tmp = _temp_path(note, "tmp")
        try:
            _write_synced(tmp, text)
            os.link(tmp, note)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            try:
                _write_synced(note, text, mode="x")
            except FileExistsError:
                continue
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(note.parent)
        return note
