"""The state folder that holds the SQLite job store and the engine lock: made on first use,
but never in a bare mount point.

Nothing works without the store, so a configured state folder whose parent is missing (an
unmounted share) is refused at once, with what to do; it cannot "wait" like the inbox.
"""

from __future__ import annotations

from pathlib import Path

from bygheartd.config import Config
from bygheartd.store.errors import StoreError


def missing_state_folder(folder: Path) -> str:
    """What is wrong with a state folder whose parent is missing, and what to do."""
    return (
        f"the state folder {folder} is missing and so is its parent {folder.parent} (an "
        "unmounted share?): nothing works without the job store kept there, so nothing "
        f"starts. Mount the share, create the folder (mkdir -p {folder}), or set "
        "[folders] state to a local folder"
    )


def make_state_folder(folder: Path) -> None:
    """Create `folder` when its parent exists (never with its parents); raise `StoreError`
    with `missing_state_folder` when the parent is missing too."""
    try:
        folder.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise StoreError(missing_state_folder(folder)) from None
    except OSError as exc:
        raise StoreError(
            f"cannot create the state folder {folder}: {exc.strerror or exc}"
        ) from None


def prepare_state_folder(config: Config) -> Path:
    """The config's state folder, made ready. The default one (not set in the config:
    `$XDG_STATE_HOME/bygheartd`, or systemd's `STATE_DIRECTORY`) is created with its
    parents, like every program that follows the XDG rules does on a fresh account; a
    configured `[folders] state` only when its parent exists."""
    folder = config.state_dir
    if config.folders.state is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the state folder {folder}: {exc.strerror or exc}; set "
                "[folders] state to a writable folder"
            ) from None
        return folder
    make_state_folder(folder)
    return folder
