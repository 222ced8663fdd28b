"""How a job ends badly, in one place: the failure with its refund, the note in failed/,
the plugins told, and plugin failures recorded on the job.

Every stage (submit, poll, delivery) fails jobs through here, so a failure always commits
its refund in the same transaction and a dropped file always gets its explanation.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import re
from pathlib import Path

from bygheartd.catalog import credits_phrase
from bygheartd.engine.parts import EngineParts
from bygheartd.folders.moves import copy_no_clobber, write_note
from bygheartd.hooks.host import HookFailure, PluginHost
from bygheartd.jobs import Job, JobStatus
from bygheartd.store.errors import StaleTransition

log = logging.getLogger(__name__)

# `base.part`, `base.takeN.part`, and `base-N.part` left by versions that named takes so.
_PART_OF_TAKE = re.compile(r"(\.take\d+|-\d+)?\.part")


class Endings:
    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    def fail(self, job: Job, reason: str, *, refund: bool = True) -> None:
        """Fail a job: refund when nothing was produced, tell plugins, copy drops to failed/."""
        parts = self.parts
        # The refund commits with the failure: a crash between them must not keep it.
        refund_line = parts.budget.refund_entry(job.id, job.model) if refund else None
        try:
            failed = parts.store.transition(
                job.id,
                JobStatus.FAILED,
                event="failed",
                reason=reason,
                expect={s for s in JobStatus if not s.is_final},
                ledger=refund_line,
            )
        except StaleTransition:
            return
        if refund_line is not None:
            parts.store.add_event(
                job.id, "refunded", f"{credits_phrase(-refund_line['credits'])} back"
            )
        log.warning("job %s (%s) failed: %s", job.id, job.title, reason)
        if job.base_name:
            remove_parts(parts.config.folders.output, job.base_name)
        if failed.origin == "drop":
            self._copy_to_failed(failed, reason)
        if parts.plugins is not None:
            plugins = parts.plugins
            asyncio.get_running_loop().create_task(self._notify_failed(plugins, failed, reason))

    async def _notify_failed(self, plugins: PluginHost, job: Job, reason: str) -> None:
        self.record_hook_failures(job.id, await plugins.on_failed(job, reason))

    def _copy_to_failed(self, job: Job, reason: str) -> None:
        if not job.archived_as:
            return
        folders = self.parts.config.folders
        archived = folders.archive / job.archived_as
        try:
            copy = copy_no_clobber(archived, folders.failed, Path(job.archived_as).name)
            write_note(
                copy,
                f"{copy.name}: the song was accepted (job {job.id}) but failed later:\n"
                f"{reason}\n\nTo try again: `bygheartd retry {job.id}`, or drop the file into "
                "the inbox again.\n",
            )
        except OSError as exc:
            log.warning("could not copy %s to failed/: %s", archived, exc)

    def record_hook_failures(self, job_id: str, failures: list[HookFailure]) -> None:
        for failure in failures:
            self.parts.store.add_event(
                job_id, f"plugin {failure.plugin} failed", describe_failure(failure)
            )


def describe_failure(failure: HookFailure) -> str:
    what = "timed out" if failure.timed_out else f"raised {failure.error}"
    return f"plugin {failure.plugin} {failure.hook} {what}"


def remove_parts(output: Path, base: str) -> None:
    """The `.part` files of this base's takes (`base.part`, `base.takeN.part`), no others."""
    for part in output.glob(f"{glob.escape(base)}*.part"):
        if _PART_OF_TAKE.fullmatch(part.name[len(base) :]):
            part.unlink(missing_ok=True)
