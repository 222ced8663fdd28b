"""`completion/complete`: what a client offers while a person fills in a resource template
or a prompt argument. Recent job ids for the song and take URIs, the takes of the chosen
song, and for the `write_song` prompt the genres and moods of the guide, the backend's
models and the languages the model sings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from mcp.types import Completion, CompletionArgument, CompletionContext

from bygheartd import catalog
from bygheartd.errors import BygheartdError
from bygheartd.service.service import SongService

__all__ = ["LIMIT", "SongCompletions", "guide_words", "matching"]

LIMIT = 100  # the protocol's cap on values per answer
RECENT_JOBS = 200


def matching(values: Iterable[str], prefix: str) -> Completion:
    """The values that start with `prefix` (any case), in order, without repeats."""
    start = prefix.strip().lower()
    found = list(dict.fromkeys(v for v in values if v.lower().startswith(start)))
    return Completion(values=found[:LIMIT], total=len(found), has_more=len(found) > LIMIT)


@functools.cache
def guide_words(dimension: str) -> tuple[str, ...]:
    """The examples of one style dimension (`genre`, `mood`) from the guide's table: the
    guide stays the one place that lists them."""
    pattern = re.compile(rf"^\|\s*{re.escape(dimension)}\s*\|([^|]*)\|", re.MULTILINE)
    match = pattern.search(catalog.data_text("guide.md"))
    if match is None:
        return ()
    return tuple(w.strip() for w in match.group(1).split(",") if w.strip())


class SongCompletions:
    """Answers completion requests for one server (its backend's models, its store)."""

    def __init__(self, service: SongService, models: Sequence[str]) -> None:
        self.service = service
        self.models = list(models)

    async def job_ids(self, prefix: str) -> Completion:
        jobs = await self.service.list(None, RECENT_JOBS, summary=True)
        return matching((job.id for job in jobs), prefix)

    async def takes(self, job_id: str | None, prefix: str) -> Completion:
        if not job_id:
            return Completion(values=[])
        try:
            job = await self.service.get(job_id)
        except BygheartdError:
            return Completion(values=[])
        return matching((str(n) for n in range(1, len(job.files) + 1)), prefix)

    def languages(self, prefix: str) -> Completion:
        names = catalog.language_names()
        codes = [code for code in catalog.languages() if code.startswith(prefix.strip().lower())]
        spelled = [
            name for name in names.values() if name.lower().startswith(prefix.strip().lower())
        ]
        return matching([*codes, *spelled], prefix)

    async def template(
        self, uri: str, argument: CompletionArgument, context: CompletionContext | None
    ) -> Completion | None:
        if not uri.startswith("bygheart://songs/"):
            return None
        if argument.name == "job_id":
            return await self.job_ids(argument.value)
        if argument.name == "n":
            given = (context.arguments or {}) if context is not None else {}
            return await self.takes(given.get("job_id"), argument.value)
        return None

    def prompt(self, name: str, argument: CompletionArgument) -> Completion | None:
        if name != "write_song":
            return None
        if argument.name in ("genre", "mood"):
            return matching(guide_words(argument.name), argument.value)
        if argument.name == "model":
            return matching(self.models, argument.value)
        if argument.name == "language":
            return self.languages(argument.value)
        return None
