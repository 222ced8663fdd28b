"""The library's "show" filter: every take, keepers only (each finished song with the take
it keeps, nothing else), or the songs with a take that failed the quality gate, combined
with the text search and the status filter and paged like the rest.

"Failed the gate" is a store-side match on the job's warnings (every finding of the
`quality` plugin is one, `quality: ...`): the store returns the page and the count, as for
any other filter, without reading every finished song (bench/web.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from bygheartd.jobs import Job, JobStatus
from bygheartd.service.service import SongService

__all__ = ["GATE_WARNING", "SHOWS", "find_page"]

# The `show` parameter's values and what the page calls them.
SHOWS = {"": "every take", "keepers": "keepers only", "failed": "failed the gate"}
# What a finding of the quality gate looks like among a job's warnings.
GATE_WARNING = "quality: "


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
    return await service.search(
        text, [JobStatus.DONE], limit=limit, offset=offset, warning_prefix=GATE_WARNING
    )
