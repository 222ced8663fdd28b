"""Start-up checks of the folders: exist or can be created, writable, not overlapping.

Run before any work, so a read-only share or a typo in a path is reported at once
instead of when the first song is due.
"""

from __future__ import annotations

import os
from pathlib import Path

from bygheartd.config import Config
from bygheartd.errors import ConfigError

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs"}


def folder_map(config: Config) -> dict[str, Path]:
    f = config.folders
    return {
        "inbox": f.inbox,
        "output": f.output,
        "archive": f.archive,
        "failed": f.failed,
        "drafts": f.drafts,
        "state": config.state_dir,
    }


def check_overlap(config: Config) -> None:
    """The inbox may not contain (or sit inside) the output, archive, failed or state folders."""
    folders = folder_map(config)
    inbox = folders["inbox"].resolve()
    for name in ("output", "archive", "failed", "state"):
        other = folders[name].resolve()
        if other == inbox or other.is_relative_to(inbox) or inbox.is_relative_to(other):
            raise ConfigError(
                f"[folders] inbox ({inbox}) overlaps {name} ({other}): the watcher would take "
                "its own files for songs. Give them separate folders."
            )


def check_folders(config: Config, *, create: bool = True) -> list[str]:
    """Create missing folders whose parent exists; return problems as readable lines."""
    check_overlap(config)
    problems = []
    for name, path in folder_map(config).items():
        # The default state folder ($XDG_STATE_HOME/bygheartd) is made with its parents,
        # like any XDG program's; a configured folder never is (an unmounted share).
        default_state = name == "state" and config.folders.state is None
        if not path.exists():
            if not path.parent.exists() and not default_state:
                problems.append(_missing_with_parent(name, path))
                continue
            if create:
                try:
                    path.mkdir(parents=default_state, exist_ok=True)
                except OSError as exc:
                    problems.append(f"cannot create the {name} folder {path}: {exc.strerror}")
                    continue
        if path.exists() and not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"the {name} folder {path} is not writable by this user")
    fs = filesystem_type(config.state_dir)
    if fs in NETWORK_FS:
        problems.append(
            f"the state folder {config.state_dir} is on a network file system ({fs}): SQLite "
            "locking is unreliable there; use a local [folders] state"
        )
    return problems


def _missing_with_parent(name: str, path: Path) -> str:
    """What a folder whose parent is missing (an unmounted share?) means for its part."""
    what = f"{name} folder {path} is missing and so is its parent (an unmounted share?)"
    if name == "state":
        return (
            f"{what}: nothing works without the job store kept there, so nothing starts "
            f"until it is there. Mount the share, create the folder (mkdir -p {path}), or "
            "set [folders] state to a local folder"
        )
    waits = {
        "inbox": "the drop folder is paused",
        "output": "finished songs are held",
        "archive": "dropped songs stay in the inbox",
        "failed": "rejected drops stay in the inbox, and failed jobs get no copy there",
        "drafts": "inspire and describe refuse to write there (-o FILE writes elsewhere)",
    }.get(name)
    if waits is None:
        return f"{what}: check the path, or mount the share"
    return f"{what}: {waits} until it appears; it is never created in a bare mount point"


def filesystem_type(path: Path) -> str | None:
    """The mount's file-system type from /proc/mounts (Linux); None when unknown."""
    try:
        target = path.resolve()
        best, best_type = "", None
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if (
                    len(parts) >= 3
                    and str(target).startswith(parts[1])
                    and len(parts[1]) > len(best)
                ):
                    best, best_type = parts[1], parts[2]
        return best_type
    except OSError:
        return None
