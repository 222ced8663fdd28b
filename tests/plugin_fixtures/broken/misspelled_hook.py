"""A plugin with a misspelled hook name: check_pending must catch it."""

from bygheartd.plugins import hookimpl


@hookimpl
def on_compelte(job, files):
    return None
