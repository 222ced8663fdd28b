"""bygheartd: a local daemon that turns a drop folder and an AI assistant into a song
factory for the Bygheart Music API.

Plugin authors need only `from bygheartd import hookimpl, RejectJob`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RejectJob", "__version__", "hookimpl"]

if TYPE_CHECKING:
    from bygheartd.errors import RejectJob
    from bygheartd.hooks.specs import hookimpl


def __getattr__(name: str) -> Any:
    # Lazy: the CLI's cold start must not pay for pluggy when it lists jobs.
    if name == "hookimpl":
        from bygheartd.hooks.specs import hookimpl

        return hookimpl
    if name == "RejectJob":
        from bygheartd.errors import RejectJob

        return RejectJob
    raise AttributeError(f"module 'bygheartd' has no attribute {name!r}")
