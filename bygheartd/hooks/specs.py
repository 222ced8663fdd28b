"""The pinned plugin hooks: one function per hook, documented for plugin authors.

Implementations may take any subset of a hook's arguments (by name), may be `async def`,
and run one by one with a time limit; see docs/plugins.md and bygheartd/hooks/host.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from bygheartd.jobs import Job

hookspec = pluggy.HookspecMarker("bygheartd")
# What plugin authors decorate their hooks with, re-exported as `bygheartd.hookimpl`.
hookimpl = pluggy.HookimplMarker("bygheartd")


@hookspec
def before_submit(job: Job, request: dict[str, Any], config: dict[str, Any]) -> Any:
    """Called before each submission, so a plugin can change or veto what is paid for.

    `request` is the validated request with friendly names (as in the song file format),
    including any changes made by plugins earlier in the order. Return a dict of changes
    (merged in; a key set to None removes it; the request is re-validated and its credits
    re-computed afterwards) or None. Raise `bygheartd.RejectJob(reason)` to fail the job
    with that reason. Any other exception fails the job before anything is spent.
    """


@hookspec
def after_submit(job: Job, task_id: str, config: dict[str, Any]) -> Any:
    """Called once the server's task id is stored: observe only (log, notify, meter).

    The return value is ignored; an exception is recorded on the job and changes nothing.
    """


@hookspec
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> Any:
    """Called after the audio is downloaded and before the job is `done`: post-process it.

    `files` are absolute paths of the job's files (plus files added by earlier plugins).
    Change them in place (tag, normalise), copy them elsewhere (upload), or add files.
    Return None, a list of paths of files added, or a dict
    `{"files": [paths added], "sidecar": {JSON-serialisable data}}`; the sidecar data is
    stored in the job's sidecar under the plugin's name. A failure leaves the job `done`
    with an entry in its `warnings`, and the audio is kept.
    """


@hookspec
def on_done(job: Job, files: list[Path], config: dict[str, Any]) -> Any:
    """Called once a job is `done`, after its sidecar is written: observe (notify).

    `job` is the finished record (status `done`) and `files` are its files as they are now,
    after every `on_complete` plugin (copies made elsewhere included). The return value is
    ignored; an exception is recorded in the job's history and changes nothing.
    """


@hookspec
def on_failed(job: Job, reason: str, config: dict[str, Any]) -> Any:
    """Called when a job fails, with the human-readable reason: observe (notify).

    The return value is ignored; an exception is recorded and the job stays failed.
    """


@hookspec
def on_held(job: Job, reason: str, config: dict[str, Any]) -> Any:
    """Called when a job is held (no credits, a bad key, a rate limit): observe (notify).

    `job.resumes_at` says when the job is expected to resume, when known. The return value
    is ignored; an exception is recorded and changes nothing.
    """


@hookspec
def on_retake(job: Job, reason: str, config: dict[str, Any]) -> Any:
    """Called when no take passed the quality gate and the job is made again: observe.

    A retake is a new submission that spends credits (`[retakes]`), so it is announced like
    a failure or a hold (the webhook's `retake` event). `job` is queued again, its
    `result["retakes"]` lists every retake so far; `reason` says what the gate found. The
    return value is ignored; an exception is recorded and changes nothing.
    """


@hookspec
def on_album_complete(
    album: dict[str, Any], jobs: list[Job], files: list[Path], config: dict[str, Any]
) -> Any:
    """Called once, when every track of an album is `done`: post-process the album whole.

    `album` is `{id, title, artist, tracks}`; `jobs` are its track records in track order;
    `files` are the audio files of every track (every take), in track order. Change them in
    place (the `loudnorm` plugin applies one album gain here); every track's records and
    sidecar are described again from the disk afterwards. Return None or a dict
    `{"sidecar": {JSON-serialisable data}}`, kept in the album's `album.json` under the
    plugin's name. An exception is recorded (a warning in `album.json`) and the tracks stay.
    """
