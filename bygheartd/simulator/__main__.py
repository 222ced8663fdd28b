"""`python -m bygheartd.simulator`: the simulator without the main CLI, same options as
`bygheartd simulator` (both built from CLI_OPTIONS).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from .server import LOG_LEVELS, CannotListen, serve
from .settings import CLI_OPTIONS, settings_from_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bygheartd.simulator",
        description="Serve the Bygheart Music API simulator. With --port 0 the first line "
        "on stdout is the base URL; logs go to stderr.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    parser.add_argument("--port", type=int, default=0, help="Port (0: pick a free one).")
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="Log detail on stderr (debug adds a line per request).",
    )
    for option in CLI_OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        if option.type is bool:
            parser.add_argument(
                flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{option.help} (default: {option.default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=option.name,
                type=option.type,
                choices=option.choices,
                default=None,
                help=f"{option.help} (default: {option.default})",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    host, port, level = args.pop("host"), args.pop("port"), args.pop("log_level")
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(levelname)s %(message)s")
    try:
        settings = settings_from_cli(**args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve(settings, host, port, log_level=level)
    except CannotListen as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
