"""The song page's edit tasks (DESIGN.md "Edit tasks"): "Extend" (seconds, before or
after, which take) and "Stems" (track names, which take) on a finished song, each with its
cost shown before anything is queued, as the new-song form shows it. They queue through
the same service functions as the CLI and MCP (service/edits.py) and lead to the new
job(s); what the service refuses is said on a page of its own, in its own words.

The stems of a song (made here, by the CLI or by MCP) are listed on its page, each with its
status, progress and player (`stems_view`); the stems form leads there, and the page's
script reads that list again (`/songs/<id>/stems/fragment`) as the stems are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bygheartd.errors import RequestError
from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.service import edits
from bygheartd.service.errors import ServiceError
from bygheartd.songs import fields
from bygheartd.web.auth import Access
from bygheartd.web.pages import PageHost

__all__ = ["EditForms"]

DEFAULT_SECONDS = 30


class EditForms:
    """The extend and stems forms of a finished song, rendered by the library's app."""

    def __init__(self, app: PageHost) -> None:
        self.app = app
        self.service = app.service

    def routes(self) -> list[BaseRoute]:
        page = self.app._guard
        return [
            Route("/songs/{job_id}/extend", page(self.extend, change=True), methods=["POST"]),
            Route("/songs/{job_id}/stems", page(self.stems, change=True), methods=["POST"]),
            Route("/songs/{job_id}/stems/fragment", page(self.stems_fragment), methods=["GET"]),
        ]

    async def stems_view(self, job: Job) -> dict[str, Any]:
        """What the song page shows of `job`'s stems: `stems` (library rows, oldest first;
        None unless the song is done), how many are done, and the `stem_group` that a new
        stem of this song carries (the page's script watches for it)."""
        if job.status is not JobStatus.DONE:
            return {"stems": None, "stems_done": 0, "stem_group": ""}
        stems = await self.service.stems_of(job)
        return {
            "stems": await self.app._rows(stems),
            "stems_done": sum(1 for s in stems if s.status is JobStatus.DONE),
            "stem_group": edits.stem_group(job.title),
        }

    async def stems_fragment(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        view = await self.stems_view(job)
        if view["stems"] is None:
            return self.app._not_found(request, f"job {job.id} is not done: no stems yet", False)
        return self.app.render(request, access, "_stems.html", job=job, **view)

    async def offer(self, job: Job, takes: int) -> dict[str, Any] | None:
        """What the forms show for `job` (None unless it is done with a take): the takes to
        choose from, the track names, the defaults, and what each costs before submitting."""
        if job.status is not JobStatus.DONE or takes < 1:
            return None
        backend = self.service.config.backend
        per_stem = self._cost(
            {"title": job.title, "task_type": "extract", "track_name": "vocals"}, job
        )
        extend = self._cost(
            {
                "title": f"{job.title} (extended)"[:200],
                "task_type": "repaint",
                "repainting_start": 0.0,
                "repainting_end": float(DEFAULT_SECONDS),
            }
            | {k: v for k in ("model", "audio_format") if (v := job.request.get(k)) is not None},
            job,
        )
        stems = len(edits.DEFAULT_STEMS)
        extend_text = (
            (await self.service.budget_outlook(extend)).text() if extend is not None else ""
        )
        stems_text = (
            (await self.service.budget_outlook(per_stem * stems)).text()
            if per_stem is not None
            else ""
        )
        return {
            "takes": list(range(1, takes + 1)),
            "tracks": fields.track_names(),
            "default_tracks": edits.DEFAULT_STEMS,
            "seconds": DEFAULT_SECONDS,
            "extend_cost": extend,
            "extend_text": extend_text,
            "per_stem": per_stem,
            "stems_text": stems_text,
            "free": backend == "acestep",
        }

    def _cost(self, data: dict[str, Any], job: Job) -> int | None:
        """Credits one job of this kind costs (None when it cannot be worked out)."""
        data = data | {"source_audio": "take.mp3"}
        try:
            request = self.service.build_request(data, source=f"the song page of {job.id}")
        except RequestError:
            return None
        return request.credit_cost(self.service.config.backend)

    async def extend(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        form = await request.form(max_files=0, max_fields=50)
        raw = str(form.get("seconds") or "").strip()
        take = _take(form.get("take"))
        before = str(form.get("where") or "after") == "before"
        try:
            seconds = float(raw)
        except ValueError:
            return self._refused(
                request, access, f"extend by {raw or 'nothing'!r}: give the seconds to add, e.g. 30"
            )
        try:
            queued = await edits.extend_job(
                self.service, job.id, seconds=seconds, take=take, before=before, origin=Origin.WEB
            )
        except (ServiceError, RequestError) as exc:
            return self._refused(request, access, str(exc))
        return self._done(request, [queued.job], f"/songs/{queued.job.id}")

    async def stems(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        form = await request.form(max_files=0, max_fields=50)
        tracks = [str(v) for v in form.getlist("tracks") if str(v).strip()]
        take = _take(form.get("take"))
        if not tracks:
            return self._refused(request, access, "tick at least one track to split out")
        try:
            queued = await edits.make_stems(
                self.service, job.id, take=take, tracks=tracks, origin=Origin.WEB
            )
        except (ServiceError, RequestError) as exc:
            return self._refused(request, access, str(exc))
        # The song's own page lists its stems, each with its status and player.
        return self._done(request, [q.job for q in queued], f"/songs/{job.id}#stems")

    def _done(self, request: Request, jobs: Sequence[Job], target: str) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"jobs": [{"id": j.id, "title": j.title} for j in jobs]})
        return RedirectResponse(target, status_code=303)

    def _refused(self, request: Request, access: Access, detail: str) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": "refused", "detail": detail}, status_code=409)
        return self.app.render(
            request, access, "message.html", 409, title="Not possible", message=detail
        )


def _take(value: Any) -> int:
    try:
        return max(1, int(str(value)))
    except ValueError:
        return 1
