"""A plugin with a misspelled hook name: check_pending must catch it."""

from bygheartd import hookimpl


@hookimpl
def on_compelte(job, files):
    return None
