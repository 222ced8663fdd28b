"""A history line of any job with its place in the store's event order (the live feed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bygheartd.jobs import Event


@dataclass(frozen=True)
class JobEvent:
    """One history line of any job, with its place in the store's event order (`seq`) and
    the job's title, so a live feed (`bygheartd follow`) needs no second query per line."""

    seq: int
    job_id: str
    title: str
    event: Event

    def as_record(self) -> dict[str, Any]:
        return {"seq": self.seq, "job_id": self.job_id, "title": self.title} | (
            self.event.as_record()
        )
