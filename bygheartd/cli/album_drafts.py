"""`bygheartd inspire --album "..." --tracks N`: an album file drafted by the backend's
language model, written for the user to edit and queue. Nothing is generated or spent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from bygheartd.catalog import credits_phrase
from bygheartd.cli.commands import opened_service
from bygheartd.cli.drafts import place_draft
from bygheartd.config import Config
from bygheartd.errors import RequestError
from bygheartd.safetext import visible
from bygheartd.service.album_draft_file import (
    AlbumDraft,
    write_album_to_drafts,
)
from bygheartd.service.service import SongService
from bygheartd.songs.albums import is_album_file

__all__ = ["check_album_output", "inspire_album_command"]


def check_album_output(output: str | None) -> None:
    """`-o FILE` must name an album file, or the inbox (and `submit`) would read it as a
    song file and refuse it."""
    if output is None or output == "-":
        return
    if output.lower().endswith((".album.toml", ".album.json")):
        raise click.UsageError(f"an album draft is YAML: name it NAME.album.yaml, not {output}")
    if is_album_file(output):
        return
    raise click.UsageError(
        f"{output} is not an album file name: name it NAME.album.yaml (for example "
        f"{Path(output).stem.split('.')[0] or 'my-album'}.album.yaml)"
    )


def _progress_on_terminal() -> Callable[[int, int], None] | None:
    """One line on a terminal that counts the helper calls (a real LM takes seconds per
    track); nothing when stderr is a file or a pipe."""
    if not sys.stderr.isatty():
        return None

    def show(step: int, of: int) -> None:
        what = "the album's sound" if step == 0 else f"track {step} of {of}"
        end = "\n" if step == of else ""
        click.echo(f"\rdrafting {what}...\x1b[K{end}", err=True, nl=False)

    return show


def _cost_line(service: SongService, draft: AlbumDraft) -> str | None:
    """What queueing it would cost under this configuration (its defaults: model, takes),
    or why this configuration would refuse it as it is."""
    try:
        request = service.parse_album_text(draft.text(), name="draft.album.yaml")
    except RequestError as exc:
        return f"note: as it is, your configuration refuses it: {visible(str(exc))}"
    cost = request.credit_cost(service.config.backend)
    if cost <= 0:
        return None
    return (
        f"Queueing it costs {credits_phrase(cost)} (`bygheartd submit --dry-run FILE` says so "
        "again)."
    )


async def inspire_album_command(
    config: Config,
    description: str,
    tracks: int,
    *,
    instrumental: bool,
    language: str | None,
    output: str | None,
    force: bool,
) -> int:
    """Write the model's album draft to the drafts folder, to `output`, or to stdout."""
    progress = _progress_on_terminal()
    async with opened_service(config) as service:
        draft = await service.inspire_album(
            description,
            tracks,
            instrumental=instrumental,
            language=language,
            progress=progress,
        )
        cost = _cost_line(service, draft)
    for note in draft.notes:
        click.echo(f"note: {visible(note, one_line=True)}", err=True)
    text = draft.text()
    path = place_draft(
        text,
        output,
        inbox=config.folders.inbox,
        force=force,
        to_drafts=lambda: write_album_to_drafts(draft, config.folders.drafts),
        what="the whole album",
    )
    if path is None:
        return 0
    title = visible(draft.title, one_line=True)
    click.echo(f'Wrote the album "{title}" ({len(draft.tracks)} tracks) to {path}')
    if cost:
        click.echo(cost)
    click.echo(f"Edit it, then queue it with: bygheartd submit {path}")
    return 0
