"""The library page's routes: `/` (the library), `/songs/<job_id>`, `/new`, `/guide`, the
login link, live updates (`/events`), the cost estimate and the audio, all through the
service like every other face.

`web_routes(service, token)` is what the daemon mounts on its HTTP listener, behind the
listener's Host/Origin check. Every page but `/login` and the static assets needs a session
(from `bygheartd web`) or the bearer token; every change needs the session's CSRF token too.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bygheartd.catalog import AUDIO_SUFFIXES, data_text
from bygheartd.errors import RequestError
from bygheartd.jobs import ACTIVE_STATUSES, FINAL_STATUSES, Job, JobStatus, Origin
from bygheartd.service.errors import ServiceError
from bygheartd.service.progress import WAITING as WAITING_STATUSES
from bygheartd.service.progress import Estimate, Ratchet, estimate
from bygheartd.service.service import SongService
from bygheartd.service.submission import Submission
from bygheartd.web import albums, filters, uploads, views
from bygheartd.web import form as song_form
from bygheartd.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Access, Sessions
from bygheartd.web.edit_forms import EditForms

__all__ = ["CSP", "PAGE_SIZE", "WebApp", "web_routes"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 25
MAX_PAGE_SIZE = 100  # `?per=N` songs a page
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # No Referer leaves the site (the login link's code stays here). Not "no-referrer":
    # under it browsers send `Origin: null` with the page's own form posts, which the Origin
    # check then refuses (found by tests/test_web_browser.py).
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request, Access], Awaitable[Response]]


def web_routes(
    service: SongService,
    token: str | None,
    *,
    poll_seconds: float = 0.5,
    upload_keep_seconds: float = uploads.KEEP_SECONDS,
    sweep_seconds: float = 3600.0,
) -> list[BaseRoute]:
    """The library's routes for the daemon's listener; `token` (the MCP bearer token, when
    one is configured) lets scripts in without a session. Old uploads are swept every
    `sweep_seconds` on the engine's scheduler (see `bygheartd.web.uploads`)."""
    app = WebApp(service, token, poll_seconds=poll_seconds, upload_keep_seconds=upload_keep_seconds)
    service.every("web-uploads", sweep_seconds, app.sweep_uploads)
    return app.routes()


class WebApp:
    def __init__(
        self,
        service: SongService,
        token: str | None,
        *,
        poll_seconds: float,
        upload_keep_seconds: float = uploads.KEEP_SECONDS,
    ) -> None:
        self.service = service
        self.sessions = Sessions(service.config.web.session_hours * 3600, token)
        self.poll_seconds = poll_seconds
        self.upload_keep_seconds = upload_keep_seconds
        self.lengths = views.LengthCache()
        self.edit_forms = EditForms(self)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["seconds"] = _seconds
        self.env.filters["shown"] = _shown

    def routes(self) -> list[BaseRoute]:
        page = self._guard
        return [
            Route("/", page(self.library), methods=["GET"]),
            Route("/login", self.login, methods=["GET"]),
            Route("/logout", page(self.logout, change=True), methods=["POST"]),
            Route("/guide", page(self.guide), methods=["GET"]),
            Route("/new", page(self.new_form), methods=["GET"]),
            Route("/new", page(self.new_submit, change=True), methods=["POST"]),
            Route("/api/estimate", page(self.estimate, change=True, api=True), methods=["POST"]),
            Route("/events", page(self.events, api=True), methods=["GET"]),
            Route("/session", page(self.session, api=True), methods=["GET"]),
            Route("/fragments/rows/{job_id}", page(self.row_fragment), methods=["GET"]),
            Route("/songs/{job_id}", page(self.song), methods=["GET"]),
            Route("/songs/{job_id}/fragment", page(self.song_fragment), methods=["GET"]),
            Route("/songs/{job_id}/takes/{number:int}", page(self.take, api=True)),
            Route("/songs/{job_id}/files/{name}", page(self.download, api=True)),
            Route("/songs/{job_id}/cancel", page(self.cancel, change=True), methods=["POST"]),
            Route("/songs/{job_id}/retry", page(self.retry, change=True), methods=["POST"]),
            Route(
                "/songs/{job_id}/takes/{number:int}/keep",
                page(self.keep, change=True),
                methods=["POST"],
            ),
            *albums.AlbumPages(self).routes(),
            *self.edit_forms.routes(),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- plumbing ---------------------------------------------------------------------

    def _guard(self, handler: Handler, *, change: bool = False, api: bool = False) -> Any:
        """Sign-in (session or bearer), CSRF on changes, and the security headers."""

        async def endpoint(request: Request) -> Response:
            access = self.sessions.access(request)
            if access is None:
                response = self._refused(request, api)
            elif change and not self.sessions.csrf_ok(access, await _csrf_sent(request)):
                response = self._forbidden(request, api)
            else:
                try:
                    response = await handler(request, access)
                except ServiceError as exc:
                    response = self._not_found(request, str(exc), api)
            response.headers.update(SECURITY_HEADERS)
            return response

        return endpoint

    def render(
        self, request: Request, access: Access | None, name: str, status: int = 200, **data: Any
    ) -> HTMLResponse:
        template = self.env.get_template(name)
        html = template.render(
            csrf=access.csrf if access is not None else "",
            csrf_field=CSRF_FIELD,
            path=request.url.path,
            **data,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _refused(self, request: Request, api: bool) -> Response:
        # A cookie the daemon does not know: the session ended (a restart forgets every
        # session, or it expired). Say so, so a page open since then can tell its user.
        ended = bool(request.cookies.get(COOKIE))
        if api or "text/html" not in request.headers.get("accept", ""):
            detail = (
                "your login ended (the daemon restarted or the session expired): log in "
                "again with the link `bygheartd web` prints"
                if ended
                else "log in with the link `bygheartd web` prints, or send the header "
                "'Authorization: Bearer TOKEN', TOKEN being the content of [mcp] token_file"
            )
            return JSONResponse(
                {"error": "login_ended" if ended else "unauthorized", "detail": detail},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="bygheartd"'},
            )
        return self.render(request, None, "login_needed.html", status=401, ended=ended)

    def _forbidden(self, request: Request, api: bool) -> Response:
        detail = "the form's CSRF token is missing or wrong: reload the page and try again"
        if api or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": "forbidden", "detail": detail}, status_code=403)
        return self.render(request, None, "message.html", 403, title="Refused", message=detail)

    def _not_found(self, request: Request, detail: str, api: bool) -> Response:
        if api or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": "not_found", "detail": detail}, status_code=404)
        return self.render(request, None, "message.html", 404, title="Not found", message=detail)

    # -- login ------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        code = request.query_params.get("code", "")
        if not await self.service.logins.use_code(code):
            return self.render(request, None, "login_needed.html", status=403, used=True)
        token = self.sessions.open()
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            path="/",
            secure=request.url.scheme == "https",
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    async def logout(self, request: Request, access: Access) -> Response:
        self.sessions.close(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- the library ------------------------------------------------------------------

    async def library(self, request: Request, access: Access) -> Response:
        params = request.query_params
        text = params.get("q", "").strip()[:200]
        statuses = _statuses(params.get("status", ""))
        show = params.get("show", "")
        show = show if show in filters.SHOWS else ""
        page = _whole(params.get("page", ""), 1, 1, 10**9)
        per = _whole(params.get("per", ""), PAGE_SIZE, 1, MAX_PAGE_SIZE)
        jobs, total = await filters.find_page(
            self.service, text, statuses, show, limit=per, offset=(page - 1) * per
        )
        pages = max(1, -(-total // per))
        credits = await self.service.credits()
        bars, peak = views.usage_bars(await self.service.usage_by_day(30))
        rows = await self._rows(jobs, keepers_only=show == "keepers")
        live = page == 1 and not text and not statuses and not show
        # The newest albums head the first page (each links to its album page).
        shelf = (
            albums.album_summaries(await self.service.albums(albums.LIBRARY_ALBUMS)) if live else []
        )

        def link(n: int) -> str:
            query = {"q": text, "status": params.get("status", ""), "show": show}
            query["per"] = str(per) if per != PAGE_SIZE else ""
            query["page"] = str(n) if n != 1 else ""
            return "/?" + urlencode({k: v for k, v in query.items() if v})

        return self.render(
            request,
            access,
            "library.html",
            rows=rows,
            total=total,
            page=page,
            pages=pages,
            prev_link=link(page - 1) if page > 1 else None,
            next_link=link(page + 1) if page < pages else None,
            q=text,
            status_filter=params.get("status", ""),
            statuses=[s.value for s in JobStatus],
            show=show,
            shows=filters.SHOWS,
            credits=credits,
            bars=bars,
            peak=peak,
            live=live,
            albums=shelf,
        )

    async def _rows(
        self, jobs: Sequence[Job], *, keepers_only: bool = False
    ) -> list[dict[str, Any]]:
        """The library rows; a row's length is what its takes measure (blocking, off the
        loop: a `stat` per row, a take's header when the sidecar has no figure), the
        requested one a hint when far off. A sidecar is read only when it changed."""
        output = self.service.config.folders.output

        def look() -> list[views.LengthLook]:
            return [
                self.lengths.look(
                    job,
                    output / f"{job.base_name}.json"
                    if job.base_name and job.status is JobStatus.DONE
                    else None,
                )
                for job in jobs
            ]

        looks = await asyncio.to_thread(look)
        wanted = [job for job, seen in zip(jobs, looks, strict=True) if seen.needs_sidecar]
        read = await asyncio.gather(*(self.service.sidecar(job) for job in wanted))
        sidecars = {job.id: sidecar for job, sidecar in zip(wanted, read, strict=True)}

        def rows() -> list[dict[str, Any]]:
            return [
                self._row(job, self.lengths.measure(job, seen, sidecars.get(job.id)), keepers_only)
                for job, seen in zip(jobs, looks, strict=True)
            ]

        return await asyncio.to_thread(rows)

    @staticmethod
    def _row(job: Job, lengths: list[float | None], keepers_only: bool = False) -> dict[str, Any]:
        requested = _duration(job)
        low, high, hint = views.length_summary(lengths, requested)
        # Verdicts from the record (the plugins' results are kept there too): no sidecar read.
        takes = views.takes_of(job, job.result.postprocess, draw=False)
        listed = [(take, lengths[n] if n < len(lengths) else None) for n, take in enumerate(takes)]
        # The keeper's player first (it is the one to hear), the others in take order.
        listed.sort(key=lambda pair: not pair[0].keeper)
        if keepers_only:
            listed = listed[:1]
        return {
            "job": job,
            "takes": listed,
            "progress": estimate(job),
            "making": _making(job),
            "duration": requested,
            "low": low,
            "high": high,
            "requested_hint": hint,
        }

    async def row_fragment(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        [row] = await self._rows([job])
        return self.render(request, access, "_row.html", row=row)

    # -- one song ---------------------------------------------------------------------

    async def _song_data(self, job: Job, wanted_take: str = "") -> dict[str, Any]:
        sidecar = await self.service.sidecar(job)
        takes = views.takes_of(job, sidecar)
        # The take the player starts on: the one asked for (`?take=N`), else the keeper.
        current = next((t for t in takes if str(t.number) == wanted_take), None)
        current = current or next((t for t in takes if t.keeper), None)
        current = current or (takes[0] if takes else None)
        per_take = {w for take in takes for w in take.warnings}
        per_take |= {f"quality: {m}" for take in takes for _, m in take.findings}
        return {
            "job": job,
            "takes": takes,
            "current": current,
            # A waiting song's time left comes from the queue and the history (`Line`).
            "progress": estimate(
                job, line=await self.service.line() if job.status in WAITING_STATUSES else None
            ),
            "making": _making(job),
            # A take's own warnings and findings show beside it; the rest at the top.
            "job_warnings": [w for w in job.warnings if w not in per_take],
            "generated": views.generated_text(sidecar),
            "history": await self.service.history(job),
            "parameters": sorted(
                (k, v) for k, v in job.request.items() if k not in ("lyrics", "style", "title")
            ),
            "downloads": [f.path.name for f in job.files],
            "final": job.status in FINAL_STATUSES,
            "can_cancel": job.status not in FINAL_STATUSES,
            "can_retry": job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
            "can_keep": job.status is JobStatus.DONE,
            "charged": (await self.service.charged([job])).get(job.id, 0),
            "edits": await self.edit_forms.offer(job, len(takes)),
            **await self.edit_forms.stems_view(job),
        }

    async def song(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        wanted = request.query_params.get("take", "")
        return self.render(request, access, "song.html", **await self._song_data(job, wanted))

    async def song_fragment(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        wanted = request.query_params.get("take", "")
        return self.render(request, access, "_song.html", **await self._song_data(job, wanted))

    async def cancel(self, request: Request, access: Access) -> Response:
        return await self._change(request, access, self.service.cancel)

    async def retry(self, request: Request, access: Access) -> Response:
        return await self._change(request, access, self.service.retry)

    async def keep(self, request: Request, access: Access) -> Response:
        """A person's keeper: take `number` of a finished song (back to that take)."""
        number = int(request.path_params["number"])

        async def keep(job_id: str) -> Job:
            return await self.service.keep(job_id, number)

        return await self._change(request, access, keep, anchor=f"take-{number}")

    async def _change(
        self,
        request: Request,
        access: Access,
        action: Callable[[str], Awaitable[Job]],
        *,
        anchor: str = "",
    ) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        try:
            job = await action(job.id)  # a retry wakes the engine itself
        except ServiceError as exc:
            if "text/html" not in request.headers.get("accept", ""):
                return JSONResponse({"error": "refused", "detail": str(exc)}, status_code=409)
            return self.render(
                request, access, "message.html", 409, title="Not possible", message=str(exc)
            )
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(
                {"id": job.id, "status": job.status.value, "keeper": job.keeper_record()}
            )
        return RedirectResponse(
            f"/songs/{job.id}" + (f"#{anchor}" if anchor else ""), status_code=303
        )

    # -- audio ------------------------------------------------------------------------

    def _recorded(self, job: Job, path: Path) -> Path | None:
        """`path` when it is one of the job's recorded files, inside the output folder and
        still there; None for anything else (a link elsewhere, a file gone)."""
        output = self.service.config.folders.output.resolve()
        try:
            real = path.resolve(strict=True)
        except OSError:
            return None
        if not real.is_relative_to(output) or not real.is_file():
            return None
        return real

    async def take(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        number = int(request.path_params["number"])
        files = views.audio_files(job)
        if not 1 <= number <= len(files):
            return self._not_found(request, f"job {job.id} has no take {number}", True)
        real = self._recorded(job, files[number - 1])
        if real is None:
            return self._not_found(request, "that take is not in the output folder", True)
        return FileResponse(
            real, media_type=views.content_type(real), content_disposition_type="inline"
        )

    async def download(self, request: Request, access: Access) -> Response:
        job = await self.service.get(request.path_params["job_id"])
        name = request.path_params["name"]
        for recorded in job.files:
            if recorded.path.name == name:
                real = self._recorded(job, recorded.path)
                if real is not None:
                    return FileResponse(real, media_type=views.content_type(real), filename=name)
        return self._not_found(request, f"job {job.id} recorded no file {name!r}", True)

    # -- the new-song form ------------------------------------------------------------

    async def new_form(self, request: Request, access: Access) -> Response:
        values = song_form.values_from_request(self.service.config.request_defaults())
        note = ""
        kept: dict[str, str] = {}
        source = request.query_params.get("from")
        if source:
            job = await self.service.get(source)
            kept = {key: path.name for key, path in (await self._kept(job)).items()}
            values = song_form.values_from_request(job.request)
            if request.query_params.get("seed") == "keep":
                seeds = job.result.seeds
                if seeds:
                    values["seed"] = ", ".join(seeds) if len(seeds) > 1 else seeds[0]
                note = f"Made again from “{job.title}” with the same seed."
            else:
                values.pop("seed", None)
                note = f"Made again from “{job.title}” with a new seed."
            lost = [k for k in song_form.FILE_KEYS if job.request.get(k) and k not in kept]
            if kept:
                note += " Its audio is kept (untick it or choose another file to replace it)."
            if lost:
                note += f" Upload its {' and '.join(lost)} again: the file is no longer kept."
        return await self._form(
            request, access, values, {}, note=note, kept=kept, from_job=job.id if source else ""
        )

    def _upload_folders(self) -> tuple[Path, ...]:
        """Where a job's audio may be taken from for "make again": the form's uploads and
        the archive (a dropped song's audio is copied there beside it)."""
        return (self.service.config.state_dir / "web-uploads", self.service.config.folders.archive)

    async def _kept(self, job: Job) -> dict[str, Path]:
        """The audio `job` was made with, by key (`source_audio`, ...), from the job's own
        record, when it is still in the uploads folder or the archive (the paths are
        resolved off the loop)."""
        source_path = await self.service.source_path(job.id)
        folders = self._upload_folders()

        def find() -> dict[str, Path]:
            kept = {}
            for key in song_form.FILE_KEYS:
                found = uploads.kept_audio(job, key, source_path, folders)
                if found is not None:
                    kept[key] = found
            return kept

        return await asyncio.to_thread(find)

    async def _form(
        self,
        request: Request,
        access: Access,
        values: dict[str, str],
        errors: dict[str, list[str]],
        *,
        note: str = "",
        status: int = 200,
        kept: dict[str, str] | None = None,
        from_job: str = "",
    ) -> Response:
        # The cost as the page opens (the script updates it as the form changes; without
        # a script this is what shows).
        estimate_cost: int | None = None
        estimate_text = ""
        if not errors:
            data = song_form.request_data(values, audio_names=kept or {})
            try:
                song = self.service.build_request(data, source="the form")
            except RequestError:
                pass
            else:
                cost = song.credit_cost(self.service.config.backend)
                outlook = await self.service.budget_outlook(cost)
                estimate_cost, estimate_text = outlook.cost, outlook.text()
        return self.render(
            request,
            access,
            "new.html",
            status,
            groups=song_form.form_groups(self.service.config.backend),
            values=values,
            errors=errors,
            general_errors=errors.get("", []),
            note=note,
            checkboxes=song_form.CHECKBOXES,
            kept=kept or {},
            from_job=from_job,
            estimate_cost=estimate_cost,
            estimate_text=estimate_text,
            keeping={k for k in (kept or {}) if values.get(f"keep_{k}", "true") == "true"},
        )

    async def new_submit(self, request: Request, access: Access) -> Response:
        form = await request.form(max_files=len(song_form.FILE_KEYS), max_fields=200)
        try:
            return await self._submit(request, access, form)
        finally:
            await form.close()  # the upload's spooled temporary file

    async def _submit(self, request: Request, access: Access, form: FormData) -> Response:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        sent: dict[str, tuple[UploadFile, str]] = {}
        for key in song_form.FILE_KEYS:
            upload = form.get(key)
            if isinstance(upload, UploadFile) and upload.filename:
                name = _safe_name(upload.filename)
                if any(name == taken for _, taken in sent.values()):
                    name = f"{key.split('_')[0]}-{name}"  # two uploads of the same name
                sent[key] = (upload, name)
        values = {k: v for k, v in fields.items() if k in song_form.FIELD_KEYS}
        names = {key: name for key, (_, name) in sent.items()}
        # "Make again": the earlier job's audio, looked up from that job (never a path
        # the browser sent), unless a new file replaces it or the box was unticked.
        from_job = fields.get("from_job", "").strip()
        earlier: Job | None = None
        kept_files: dict[str, Path] = {}
        kept_names: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        if from_job:
            try:
                earlier = await self.service.get(from_job)
            except ServiceError:
                errors[""] = [f"the song {from_job!r} to make again is gone: upload its audio"]
        if earlier is not None:
            kept = await self._kept(earlier)
            kept_names = {key: path.name for key, path in kept.items()}
            for key in song_form.FILE_KEYS:
                values[f"keep_{key}"] = "true" if fields.get(f"keep_{key}") else "false"
                if key in sent or not fields.get(f"keep_{key}"):
                    continue
                found = kept.get(key)
                if found is None:
                    errors[key] = [f"the {key} of the earlier song is no longer kept: upload it"]
                    continue
                name = found.name
                if name in names.values():
                    name = f"{key.split('_')[0]}-{name}"
                kept_files[key], names[key] = found, name
        data = song_form.request_data(fields, audio_names=names)
        again_from = earlier.id if earlier else ""
        try:
            song = self.service.build_request(data, source="the form")
        except RequestError as exc:
            errors = _problems(exc) | errors
        if errors:
            return await self._form(
                request, access, values, errors, status=400, kept=kept_names, from_job=again_from
            )
        folder = None
        if sent or kept_files:
            folder = self.service.config.state_dir / "web-uploads" / secrets.token_hex(8)
            for key, (upload, name) in sent.items():
                if not await _save_upload(upload, folder / name):
                    await asyncio.to_thread(shutil.rmtree, folder, True)
                    return await self._form(
                        request,
                        access,
                        values,
                        {key: [f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MiB"]},
                        status=400,
                        kept=kept_names,
                        from_job=again_from,
                    )
            for key, found in kept_files.items():
                await asyncio.to_thread(uploads.reuse, found, folder / names[key])
        submission = Submission(
            song,
            Origin.WEB,
            source="web form",
            # The engine reads source_audio beside the "song file": the upload's folder.
            source_path=(folder / "form") if folder is not None else None,
        )
        queued = await self.service.submit(submission)  # it wakes the engine
        if folder is not None:  # which job the folder belongs to: see web/uploads.py
            await asyncio.to_thread(
                (folder / uploads.JOB_FILE).write_text, queued.job.id, encoding="utf-8"
            )
        return RedirectResponse(f"/songs/{queued.job.id}", status_code=303)

    async def sweep_uploads(self) -> None:
        """Delete upload folders whose job is final and old enough (the daemon runs this
        on its scheduler; the file work is off the event loop)."""
        root = self.service.config.state_dir / "web-uploads"
        jobs: dict[str, Job | None] = {}
        for job_id in await asyncio.to_thread(uploads.job_ids, root):
            try:
                jobs[job_id] = await self.service.get(job_id)
            except ServiceError:
                jobs[job_id] = None
        await asyncio.to_thread(uploads.sweep, root, jobs, keep_seconds=self.upload_keep_seconds)

    async def estimate(self, request: Request, access: Access) -> Response:
        form = await request.form(max_files=0, max_fields=200)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        names = {
            key: _safe_name(fields[key].strip())
            for key in song_form.FILE_KEYS
            if fields.get(key, "").strip()
        }
        from_job = fields.get("from_job", "").strip()
        if from_job:  # "make again" keeping the earlier audio: the name it had
            try:
                earlier = await self.service.get(from_job)
            except ServiceError:
                earlier = None
            for key in song_form.FILE_KEYS:
                if key in names or not fields.get(f"keep_{key}") or earlier is None:
                    continue
                if earlier.request.get(key):
                    names[key] = _safe_name(str(earlier.request[key]))
        data = song_form.request_data(fields, audio_names=names)
        try:
            song = self.service.build_request(data, source="the form")
        except RequestError as exc:
            return JSONResponse({"ok": False, "problems": _problems(exc)})
        outlook = await self.service.budget_outlook(song.credit_cost(self.service.config.backend))
        return JSONResponse(
            {
                "ok": True,
                "cost": outlook.cost,
                "left_today": outlook.left_today,
                "waits": outlook.hold is not None,
                "text": outlook.text(),
                "problems": {},
            }
        )

    # -- the guide --------------------------------------------------------------------

    async def guide(self, request: Request, access: Access) -> Response:
        from markdown_it import MarkdownIt

        html = (
            MarkdownIt("commonmark", {"html": False}).enable("table").render(data_text("guide.md"))
        )
        return self.render(request, access, "guide.html", guide_html=html)

    # -- live updates -----------------------------------------------------------------

    async def session(self, request: Request, access: Access) -> Response:
        """200 while the login is alive (401 once it ended): the page asks this when its
        event stream is refused, to tell "log in again" from "the daemon is down"."""
        return JSONResponse({"ok": True, "kind": access.kind})

    async def events(self, request: Request, access: Access) -> Response:
        """Server-sent events: one `job` event per change of a job (a history line, a new
        status or progress), with `id:` the event sequence so a reconnect resumes."""
        start = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            seq = int(start) if start else await self.service.event_seq()
        except ValueError:
            seq = await self.service.event_seq()
        return StreamingResponse(
            self._stream(seq),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, seq: int) -> AsyncIterator[str]:
        """`job` events when a job changes status or gains a history line (the page reloads
        that row); `progress` events when the shared estimate's figure or time left moves
        (the page updates the bar in place; a `Ratchet` per stream keeps it from falling)."""
        seen: dict[str, JobStatus] = {}
        shown: dict[str, tuple[int, str]] = {}
        ratchet = Ratchet()
        quiet = 0.0
        yield "retry: 2000\n\n"
        while True:
            changed: list[str] = []
            for event in await self.service.events_after(seq):
                seq = event.seq
                if event.job_id not in changed:
                    changed.append(event.job_id)
            moving: list[tuple[Job, Estimate]] = []
            for job in await self.service.list(list(ACTIVE_STATUSES), None, summary=True):
                if seen.get(job.id) != job.status and job.id not in changed:
                    changed.append(job.id)
                seen[job.id] = job.status
                found = ratchet.see(job)
                if shown.get(job.id) != (found.percent, found.left):
                    shown[job.id] = (found.percent, found.left)
                    moving.append((job, found))
            for job_id in changed:
                try:
                    job = await self.service.get(job_id)
                except ServiceError:
                    continue
                seen[job.id] = job.status
                yield f"id: {seq}\nevent: job\ndata: {json.dumps(_event_data(job))}\n\n"
                quiet = 0.0
            for job, found in moving:
                if job.id in changed:
                    continue  # its row is read again whole
                data = {"id": job.id, "status": job.status.value, "making": _making(job)}
                yield f"event: progress\ndata: {json.dumps(data | found.as_record())}\n\n"
                quiet = 0.0
            quiet += self.poll_seconds
            if quiet >= 15:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(self.poll_seconds)


def _making(job: Job) -> str:
    """Which making of the job a progress figure belongs to (a retry or a retake is a new
    one, starting again from zero): the page keeps a bar from falling within one."""
    submitted = job.submitted_at.isoformat() if job.submitted_at else ""
    return f"{submitted}/{job.attempts}"


def _event_data(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "title": job.title,
        "status": job.status.value,
        "making": _making(job),
        "progress": estimate(job).as_record(),
        "reason": job.reason,
        "final": job.status in FINAL_STATUSES,
        "takes": len(views.audio_files(job)),
        # A stem's song page lists it: the page reads its stems again when one changes.
        "stem_group": str(job.request.get("stem_group") or ""),
    }


async def _csrf_sent(request: Request) -> str | None:
    """The CSRF token from the header (scripts, fetch) or the form field (plain forms)."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    kind = request.headers.get("content-type", "")
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form(
            max_files=len(song_form.FILE_KEYS), max_fields=200
        )  # cached for the handler
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def _problems(exc: RequestError) -> dict[str, list[str]]:
    """Each problem under its key (the form's field names are the keys), "" for the rest,
    in the words a song file gets."""
    found: dict[str, list[str]] = {}
    for problem in exc.problems or (exc,):
        text = problem.reason + (f": {problem.hint}" if problem.hint else "")
        found.setdefault(problem.key or "", []).append(text)
    return found


def _whole(raw: str, default: int, low: int, high: int) -> int:
    """A whole number from the query within [low, high]; `default` when it is not one."""
    try:
        return min(high, max(low, int(raw)))
    except ValueError:
        return default


def _statuses(raw: str) -> list[JobStatus] | None:
    wanted = [s.strip() for s in raw.split(",") if s.strip()]
    known = {s.value: s for s in JobStatus}
    picked = [known[w] for w in wanted if w in known]
    return picked or None


def _safe_name(name: str) -> str:
    """The upload's base name in plain characters, its audio suffix kept."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).strip(".-")
    return (clean or "source")[:80] + (suffix if suffix in AUDIO_SUFFIXES else suffix[:8])


async def _save_upload(upload: UploadFile, target: Path) -> bool:
    """Copy the upload into the state folder (mode 0600); False when it is too large."""

    def prepare() -> None:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    await asyncio.to_thread(prepare)
    written = 0
    with target.open("wb") as out:
        target.chmod(0o600)
        while chunk := await upload.read(1024 * 1024):
            written += len(chunk)
            if written > MAX_UPLOAD_BYTES:
                break
            await asyncio.to_thread(out.write, chunk)
    if written > MAX_UPLOAD_BYTES:
        target.unlink(missing_ok=True)
        return False
    return True


def _duration(job: Job) -> float | None:
    value = job.request.get("duration")
    return float(value) if isinstance(value, int | float) else None


def _when(value: Any) -> str:
    if value is None:
        return ""
    return str(value.strftime("%Y-%m-%d %H:%M"))


def _shown(value: Any) -> str:
    """A request value as a song file would spell it (`yes`, `30`, `1, 2`)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "auto"
    minutes, seconds = divmod(round(float(value)), 60)
    return f"{minutes}:{seconds:02d}"
