"""The library's "show" filter: every take, keepers only (each finished song with the take
it keeps, nothing else), or the songs with a take that failed the quality gate, combined
with the text search and the status filter and paged like the rest.

"Failed the gate" is read from the job's warnings (every finding of the `quality` plugin
is one, `quality: ...`), which the store's summary listing carries without the bodies of
the records: one light query over the finished songs, then the page's records in full.
"""

from __future__ import annotations

from collections.abc import Sequence

from bygheartd.jobs import Job, JobStatus
from bygheartd.service.service import SongService

__all__ = ["SHOWS", "failed_gate", "find_page"]

# The `show` parameter's values and what the page calls them.
SHOWS = {"": "every take", "keepers": "keepers only", "failed": "failed the gate"}
# A text search with "failed the gate" reads its matches whole; past this many, only the
# newest are looked at (the page says how many were found).
TEXT_MATCH_LIMIT = 5000


def failed_gate(job: Job) -> bool:
    """Whether a take of `job` failed the quality gate (a finding is a `quality:` warning)."""
    return any(warning.startswith("quality: ") for warning in job.warnings)


async def find_page(
    service: SongService,
    text: str,
    statuses: Sequence[JobStatus] | None,
    show: str,
    *,
    limit: int,
    offset: int,
) -> tuple[Sequence[Job], int]:
    """One page of the library under the filters, newest first, and how many match."""
    if show not in ("keepers", "failed"):
        return await service.search(text, statuses, limit=limit, offset=offset)
    # Both are about finished songs: only `done` has a keeper and a verdict.
    if statuses is not None and JobStatus.DONE not in statuses:
        return [], 0
    if show == "keepers":
        return await service.search(text, [JobStatus.DONE], limit=limit, offset=offset)
    if text:
        matches, _ = await service.search(text, [JobStatus.DONE], limit=TEXT_MATCH_LIMIT, offset=0)
        failed = [job for job in matches if failed_gate(job)]
        return failed[offset : offset + limit], len(failed)
    listed = await service.list([JobStatus.DONE], None, summary=True)
    ids = [job.id for job in listed if failed_gate(job)]
    return [await service.get(job_id) for job_id in ids[offset : offset + limit]], len(ids)
