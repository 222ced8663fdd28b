"""File moves that never lose or overwrite anything: unique names, no-clobber moves, notes.

Used by the drop folder (archive/, failed/) and the engine (failed copies of dropped songs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path


def unique_path(directory: Path, name: str) -> Path:
    """`name` in `directory`, or `stem-2.ext`, `stem-3.ext`, ... when taken."""
    candidate = directory / name
    if not _exists(candidate):
        return candidate
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while True:
        candidate = directory / f"{stem}-{n}{suffix}"
        if not _exists(candidate):
            return candidate
        n += 1


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def move_no_clobber(src: Path, directory: Path, name: str | None = None) -> Path:
    """Move `src` into `directory` under a free name; never overwrites, never deletes.

    A hard link then unlink is atomic and refuses to replace; across file systems we copy,
    fsync, then remove the original only once the copy is safe.
    """
    directory.mkdir(parents=True, exist_ok=True)
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
    tmp = target.with_name(f".{target.name}.moving")
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


def copy_no_clobber(src: Path, directory: Path, name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        target = unique_path(directory, name or src.name)
        tmp = target.with_name(f".{target.name}.copying")
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
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def error_note_path(moved: Path) -> Path:
    """`NAME.error.txt` beside a file in failed/."""
    return moved.with_name(moved.name + ".error.txt")
