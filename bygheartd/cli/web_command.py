"""`bygheartd web`: a one-time login link to the library page, printed and opened.

The code is made through the service (only its hash lands in the job store, valid two
minutes, good once), so the running daemon, another process, can check it.
"""

from __future__ import annotations

import sys
import webbrowser

import click

from bygheartd.config import Config

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


async def web_command(config: Config, *, no_open: bool) -> int:
    from bygheartd.cli.commands import opened_service

    if not config.web.enabled:
        where = str(config.source_path) if config.source_path else "your config file"
        click.echo(
            f"error: the library page is off: set [web] enabled = true in {where}, then "
            "restart `bygheartd run`",
            err=True,
        )
        return 1
    async with opened_service(config) as service:
        address = await service.logins.address()
        running = service.engine_holder() is not None
        if address is None or not running:
            host = config.mcp.host
            host = "127.0.0.1" if host in WILDCARDS else host
            host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            address = f"http://{host}:{config.mcp.port}"
            click.echo(
                "note: no running `bygheartd run` serves the library now: start it within two "
                "minutes, or run `bygheartd web` again once it runs",
                err=True,
            )
        else:
            address = _loopback(address)
        code = await service.logins.new_code()
    url = f"{address}/login?code={code}"
    click.echo(url)
    click.echo("This link logs one browser in; it works once, within two minutes.", err=True)
    if not no_open:
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
        if not opened:
            click.echo("No browser could be opened here: open the link above.", err=True)
    sys.stdout.flush()
    return 0


def _loopback(address: str) -> str:
    """A daemon bound to every address announces it so; a browser needs a loopback name."""
    for wildcard in ("0.0.0.0", "[::]"):
        prefix = f"http://{wildcard}:"
        if address.startswith(prefix):
            return "http://127.0.0.1:" + address[len(prefix) :]
    return address
