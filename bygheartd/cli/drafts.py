"""`bygheartd inspire` and `bygheartd polish`: drafts from the backend's language model,
written as song files that queue as they are. Nothing is generated, nothing is spent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from bygheartd.cli.commands import opened_service
from bygheartd.config import Config
from bygheartd.safetext import visible
from bygheartd.service.album_draft_file import write_named_draft
from bygheartd.service.drafts import (
    SongDraft,
    draft_name,
    polished_name,
    write_draft,
)

__all__ = ["inspire_command", "place_draft", "polish_command", "write_song_draft"]


def _notes(draft: SongDraft) -> None:
    for note in draft.notes:  # the model's words: shown, never interpreted by the terminal
        click.echo(f"note: {visible(note)}", err=True)


def write_song_draft(
    config: Config, draft: SongDraft, output: str | None, *, force: bool, then: str
) -> int:
    """A model's song draft, for `inspire` and `describe`: its notes, then the draft where
    `place_draft` puts it, and what to do next (`then`: "queue it", "make it")."""
    _notes(draft)
    text = draft.text()
    path = place_draft(
        text,
        output,
        inbox=config.folders.inbox,
        force=force,
        to_drafts=lambda: write_draft(text, config.folders.drafts, draft_name(draft)),
    )
    if path is None:
        return 0
    click.echo(f"Wrote {visible(draft.title, one_line=True)!r} to {path}")
    click.echo(f"Edit it, then {then} with: bygheartd submit {path}")
    return 0


def place_draft(
    text: str,
    output: str | None,
    *,
    inbox: Path,
    force: bool,
    to_drafts: Callable[[], Path],
    what: str = "it",
) -> Path | None:
    """Where a draft goes, for every command that writes one: stdout for `-` (None), the
    file named by `-o` (over an existing one only with `force`; said when that file is in
    the inbox, where the watcher queues `what` at once and spends credits), else a fresh
    file in the drafts folder (`to_drafts`)."""
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    if output is None:
        return to_drafts()
    target = Path(output).expanduser()
    if _inside(target, inbox):
        click.echo(
            f"note: {target} is in the inbox, so the watcher will queue {what} (and spend "
            "credits) as soon as it is written",
            err=True,
        )
    return write_named_draft(text, target, overwrite=force)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


async def inspire_command(
    config: Config,
    description: str | None,
    *,
    instrumental: bool,
    language: str | None,
    output: str | None,
    force: bool = False,
) -> int:
    """Write the model's draft to the drafts folder, to `output` (over an existing file
    only with `force`), or to stdout (`-`)."""
    async with opened_service(config) as service:
        draft = await service.inspire(description, instrumental=instrumental, language=language)
    return write_song_draft(config, draft, output, force=force, then="queue it")


async def polish_command(config: Config, source: Path) -> int:
    """Write the model's rewrite beside `source` (never over it) and show what changed."""
    async with opened_service(config) as service:
        polished = await service.polish(source)
    _notes(polished.after)
    directory = source.expanduser().resolve().parent
    if _inside(directory, config.folders.inbox):
        # Beside it would be in the inbox: the watcher would queue (and pay for) it.
        directory = config.folders.drafts
        click.echo(
            f"note: {source} is in the inbox; the rewrite goes to the drafts folder instead",
            err=True,
        )
    path = write_draft(polished.after.text(), directory, polished_name(source))
    changes = polished.changes()
    click.echo(visible(changes) if changes else "The model changed nothing.")
    click.echo(f"Wrote the rewrite to {path} ({source} is unchanged)")
    return 0
