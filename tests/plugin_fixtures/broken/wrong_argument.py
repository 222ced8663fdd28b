"""A plugin whose hook asks for an argument the hook does not have."""

from bygheartd import hookimpl


@hookimpl
def on_failed(job, reason, colour):
    return None
