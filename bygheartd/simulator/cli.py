"""`bygheartd simulator`: the click command, built from the same CLI_OPTIONS as
`python -m bygheartd.simulator`, so every fault and latency option is documented once.
"""

from __future__ import annotations

from typing import Any

import click

from .server import LOG_LEVELS, CannotListen, serve
from .settings import CLI_OPTIONS, settings_from_cli


def _build() -> click.Command:
    def callback(host: str, port: int, **options: Any) -> None:
        level = options.pop("log_level", None) or "info"
        options.pop("config", None)
        try:
            settings = settings_from_cli(**options)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            serve(settings, host, port, log_level=level)
        except CannotListen as exc:
            raise click.ClickException(str(exc)) from None

    params: list[click.Parameter] = [
        click.Option(
            ["--host"], default="127.0.0.1", show_default=True, help="Address to listen on."
        ),
        click.Option(
            ["--port"],
            type=int,
            default=8001,
            show_default=True,
            help="Port; 0 picks a free one and prints the base URL first on stdout.",
        ),
        click.Option(
            ["--log-level"],
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            default=None,
            help="Log detail on stderr (debug adds a line per request).",
        ),
        click.Option(["--config"], default=None, hidden=True),
    ]
    for option in CLI_OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        if option.type is bool:
            params.append(
                click.Option(
                    [f"{flag}/--no-{option.name.replace('_', '-')}"],
                    default=None,
                    help=f"{option.help} [default: {option.default}]",
                )
            )
        else:
            params.append(
                click.Option(
                    [flag],
                    type=option.type,
                    default=None,
                    help=f"{option.help} [default: {option.default}]",
                )
            )
    return click.Command(
        "simulator",
        callback=callback,
        params=params,
        help="Serve the Bygheart Music API simulator on loopback (for tests, the demo, and "
        "trying plugins offline). Every latency and fault option is below.",
    )


simulator_command = _build()
