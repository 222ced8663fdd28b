"""The commands people look for when they meet bygheartd: `guide`, `models`, `open` and
`config example`. They only read (the package's texts, the catalog, the store), so each is
safe to try at any time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bygheartd import catalog
from bygheartd.cli.display import print_json
from bygheartd.config import Config
from bygheartd.errors import BygheartdError


def guide_command() -> None:
    """The songwriting guide: rendered for a terminal, the plain Markdown when piped (so
    `bygheartd guide > guide.md` and `| less` get the text itself, not escape codes)."""
    text = catalog.data_text("guide.md")
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        console = Console(highlight=False)
        # Two hundred lines and more: through the pager ($PAGER, else less), colours kept.
        os.environ.setdefault("LESS", "-R")
        with console.pager(styles=True):
            console.print(Markdown(text))
    else:
        sys.stdout.write(text)


def config_example_command() -> None:
    """The full documented configuration, byte for byte the shipped config.example.toml:
    pip-installed users have no checkout to copy it from."""
    sys.stdout.write(catalog.data_text("config.example.toml"))


def models_command(config: Config, as_json: bool) -> None:
    """The configured backend's models with credit cost and purpose.

    The client has no models endpoint (neither the hosted API nor ACE-Step lists its
    models in a way we can price), so this is the catalog, the same list MCP
    `list_models` gives.
    """
    backend = config.backend
    default = config.defaults.model or (
        catalog.DEFAULT_HOSTED_MODEL if backend != "acestep" else ""
    )
    models = catalog.backend_models(backend)
    if as_json:
        print_json(
            {
                "backend": backend,
                "models": [
                    {
                        "name": m.name,
                        "credits": m.credits,
                        "purpose": m.purpose,
                        "default": m.name == default,
                    }
                    for m in models
                ],
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("model", no_wrap=True)
    table.add_column("cost a take", justify="right", no_wrap=True)
    table.add_column("purpose", overflow="fold")
    for m in models:
        name = f"{m.name} (default)" if m.name == default else m.name
        cost = "free" if backend == "acestep" else catalog.credits_phrase(m.credits)
        table.add_row(name, cost, m.purpose)
    console = Console(highlight=False)
    console.print(table)
    if backend == "acestep":
        console.print("a self-hosted ACE-Step server costs no credits; it knows the models it has")


async def open_command(config: Config, ref: str, take: int) -> int:
    """Open one take with the desktop's default player, or print its path when there is
    no desktop (ssh, a server) or no opener: the path is what such a user needs."""
    from bygheartd.cli.commands import opened_service

    async with opened_service(config) as service:
        job = await service.get(ref)
    if not job.files:
        raise BygheartdError(
            f"job {job.id} is {job.status.value} and has no takes yet: "
            f"`bygheartd show {job.id}` says what it is doing"
        )
    if not 1 <= take <= len(job.files):
        count = len(job.files)
        raise BygheartdError(
            f"job {job.id} has {count} take{'s' if count != 1 else ''}: use --take 1"
            + (f" to --take {count}" if count > 1 else "")
        )
    path = job.files[take - 1].path
    if not path.exists():
        raise BygheartdError(f"take {take} of job {job.id} is gone from {path}")
    opener = desktop_opener()
    if opener is None:
        print(path)
        return 0
    try:
        # Detached: the player outlives this command, and its chatter stays off our output.
        started = subprocess.Popen(
            [opener, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        print(
            f"error: could not start {opener} ({exc.strerror or exc}): the take is at",
            file=sys.stderr,
        )
        print(path)
        return 1
    # An opener that fails (xdg-open with no application for audio: exit 3) says so at
    # once; one still running after a moment is playing (some openers wait for the player).
    try:
        code = started.wait(timeout=OPENER_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        code = 0
    if code != 0:
        print(
            f"error: {Path(opener).name} could not open it (exit {code}): no application for "
            "this audio type? The take is at",
            file=sys.stderr,
        )
        print(path)
        return 1
    print(f"opening {path}")
    return 0


# How long `open` waits to hear whether the desktop's opener failed.
OPENER_GRACE_SECONDS = 3.0


def desktop_opener() -> str | None:
    """The program that opens a file with the desktop's default application, or None
    when there is no desktop to open it on."""
    if sys.platform == "darwin":
        return shutil.which("open")
    if sys.platform.startswith("win"):
        return None  # os.startfile would be the way; bygheartd targets Linux and macOS
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return shutil.which("xdg-open")
