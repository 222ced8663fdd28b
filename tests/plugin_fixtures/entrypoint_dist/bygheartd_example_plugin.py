"""A third-party plugin, published with an entry point in the `bygheartd` group."""

from bygheartd import hookimpl

seen = []


@hookimpl
def after_submit(job, task_id):
    seen.append((job.id, task_id))
