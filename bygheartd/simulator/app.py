"""The Starlette app: the API routes of API.md (enveloped replies, both error shapes, the
quirks of the real server) plus the `/_sim/...` admin routes tests use to steer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from . import lm
from .admin import admin_routes
from .auth import Caller, authenticate
from .defects import audio_plan_used, with_audio_plan
from .downloads import audio_route
from .faults import FaultMiddleware
from .lora import lora_routes
from .params import SOURCE_DIGEST, SOURCE_SECONDS, StrictFieldError, parse_params
from .plans import HOSTED_MODEL_PURPOSE, CreditRefusal
from .results import query_entries
from .settings import SimulatorSettings
from .state import QueueFull, Simulator
from .tasks import audio_seconds, inventory, loaded_models

UNSUPPORTED = (
    "Unsupported Content-Type: {0}; use application/json, "
    "application/x-www-form-urlencoded, or multipart/form-data"
)


def envelope(data: Any) -> JSONResponse:
    return JSONResponse(
        {
            "data": data,
            "code": 200,
            "error": None,
            "timestamp": int(time.time() * 1000),
            "extra": None,
        }
    )


def detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def internal_error() -> PlainTextResponse:
    return PlainTextResponse("Internal Server Error", status_code=500)


class LostReply(Response):
    """Headers of a 200, then the connection closes: the client cannot know the outcome."""

    def __init__(self, body: bytes) -> None:
        super().__init__(content=b"", media_type="application/json")
        self.announced = len(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(self.announced).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # Returning without a body makes uvicorn close the connection.


def _form_values(form: FormData) -> dict[str, Any]:
    return {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}


# Multipart file parts the real server reads, by what they are: source audio to edit,
# and a style reference (timbre and mix).
SOURCE_PARTS = ("src_audio", "ctx_audio")
REFERENCE_PARTS = ("ref_audio", "reference_audio")


async def read_body(request: Request) -> tuple[dict[str, Any], int | None] | Response:
    """Parse a JSON, urlencoded or multipart body; the int is an uploaded `src_audio` size.
    A reference upload (`ref_audio`) is noted in the values as `_ref_audio_bytes`."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        sizes: dict[str, int] = {}
        heard: dict[str, Any] = {}
        for part in (*SOURCE_PARTS, *REFERENCE_PARTS):
            upload = form.get(part)
            if isinstance(upload, UploadFile):
                data = await upload.read()
                sizes[part] = len(data)  # counted (and measured), never kept
                if part in SOURCE_PARTS and not heard:
                    heard[SOURCE_SECONDS] = await asyncio.to_thread(audio_seconds, data)
                    heard[SOURCE_DIGEST] = hashlib.sha256(data).hexdigest()
        values = _form_values(form) | heard
        await form.close()
        size = next((sizes[p] for p in SOURCE_PARTS if p in sizes), None)
        reference = next((sizes[p] for p in REFERENCE_PARTS if p in sizes), None)
        if reference is not None:
            values[REFERENCE_BYTES] = reference
        return values, size
    if content_type.startswith("application/x-www-form-urlencoded"):
        return _form_values(await request.form()), None
    raw = await request.body()
    is_json = content_type.startswith("application/json") or content_type.split(";")[
        0
    ].strip().endswith("+json")
    if not is_json and not raw.lstrip().startswith((b"{", b"[")):
        return detail(415, UNSUPPORTED.format(content_type or "(missing)"))
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return detail(400, "Malformed JSON payload")
    if not isinstance(parsed, dict):
        return detail(400, "JSON payload must be an object")
    return parsed, None


REFERENCE_BYTES = "_ref_audio_bytes"


def _token(body: dict[str, Any]) -> str | None:
    token = body.pop("ai_token", None)
    return None if token is None or token == "" else str(token)


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


async def release_task(request: Request) -> Response:
    sim = _sim(request)
    sim.stats.submit_attempts += 1
    parsed = await read_body(request)
    if isinstance(parsed, Response):
        return parsed
    body, upload_size = parsed
    caller = authenticate(sim.settings, request.headers, _token(body))
    if not isinstance(caller, Caller):
        return caller
    src_path = body.get("src_audio_path")
    if isinstance(src_path, str) and os.path.isabs(src_path):
        return detail(400, "absolute audio file paths are not allowed")
    reference_size = body.pop(REFERENCE_BYTES, None)
    # What the client sent (less the key and our own upload notes), for `/_sim/tasks`.
    received = {k: v for k, v in body.items() if not k.startswith("_")}
    try:
        params = parse_params(
            body,
            has_upload=upload_size is not None,
            has_reference_upload=reference_size is not None,
        )
    except StrictFieldError:
        return internal_error()
    settings = sim.settings
    if settings.server_error_on_submit > 0:
        settings.server_error_on_submit -= 1
        sim.stats.faults_fired["server_error_on_submit"] += 1
        return internal_error()
    params = with_audio_plan(params, settings, request.app.state)
    outcome = sim.submit(params, key=caller.key, plan=caller.plan)
    if isinstance(outcome, CreditRefusal):
        return JSONResponse(
            outcome.body, status_code=429, headers={"Retry-After": str(outcome.retry_after)}
        )
    if isinstance(outcome, QueueFull):
        return detail(429, outcome.detail)
    audio_plan_used(params, settings, request.app.state)
    outcome.received = received
    if upload_size is not None:
        sim.stats.uploads += 1
    if reference_size is not None:
        sim.stats.reference_uploads += 1
    reply = envelope(
        {"task_id": outcome.task_id, "status": "queued", "queue_position": sim.queued_count()}
    )
    if settings.lose_submit_reply > 0:
        settings.lose_submit_reply -= 1
        sim.stats.faults_fired["lose_submit_reply"] += 1
        return LostReply(bytes(reply.body))
    return reply


def _task_ids(body: dict[str, Any]) -> list[str] | Response:
    raw = body.get("task_id_list")
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raw = [raw]
    return [str(item) for item in raw]


async def query_result(request: Request) -> Response:
    sim = _sim(request)
    parsed = await read_body(request)
    if isinstance(parsed, Response):
        return parsed
    body, _ = parsed
    caller = authenticate(sim.settings, request.headers, _token(body))
    if not isinstance(caller, Caller):
        return caller
    ids = _task_ids(body)
    if isinstance(ids, Response):
        return ids
    sim.stats.polls += 1
    sim.stats.ids_per_poll.append(len(ids))
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return envelope(query_entries(ids, sim, origin))


async def audio(request: Request) -> Response:
    sim = _sim(request)
    caller = authenticate(sim.settings, request.headers, header_only=True)
    if not isinstance(caller, Caller):
        return caller
    return await audio_route(request, sim)


async def health(request: Request) -> Response:
    sim = _sim(request)
    ready = sim.models_initialized
    return envelope(
        {
            "status": "ok",
            "service": "ACE-Step API",
            "version": "1.0",
            "models_initialized": ready,
            "llm_initialized": ready,
            "loaded_model": loaded_models(sim.settings.dit_models)[0],
            "loaded_lm_model": None,
        }
    )


async def stats(request: Request) -> Response:
    sim = _sim(request)
    caller = authenticate(sim.settings, request.headers, header_only=True)
    if not isinstance(caller, Caller):
        return caller
    return envelope(
        {
            "jobs": sim.job_counts(),
            "queue_size": sim.queued_count(),
            "queue_maxsize": sim.settings.queue_maxsize,
            "avg_job_seconds": sim.avg_job_seconds(),
        }
    )


def _model_card(model_id: str, name: str, description: str, created: int) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": name,
        "created": created,
        "input_modalities": ["text", "audio"],
        "output_modalities": ["audio", "text"],
        "context_length": 4096,
        "max_output_length": 300,
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "description": description,
        "architecture": None,
    }


async def models(request: Request) -> Response:
    sim = _sim(request)
    created = int(sim.started_at)
    if sim.settings.backend == "acestep":
        # Loaded slots only: none before a lazily started server's first job (R1-1).
        loaded = sim.models_initialized or not sim.settings.lazy_init
        cards = [
            _model_card(f"acestep/{name}", f"ACE-Step {name}", "AI music generation model", created)
            for name in (loaded_models(sim.settings.dit_models) if loaded else ())
        ]
    else:
        cards = [
            _model_card(f"bygheart/{name}", name, purpose, created)
            for name, purpose in HOSTED_MODEL_PURPOSE.items()
        ]
    return JSONResponse({"object": "list", "data": cards})


async def model_inventory(request: Request) -> Response:
    sim = _sim(request)
    caller = authenticate(sim.settings, request.headers, header_only=True)
    if not isinstance(caller, Caller):
        return caller
    s = sim.settings
    return envelope(
        inventory(
            s.dit_models,
            s.disk_models,
            loaded=sim.models_initialized or not s.lazy_init,
            llm_initialized=sim.models_initialized,
        )
    )


async def _lm_request(request: Request, *, needs_lm: bool = True) -> dict[str, Any] | Response:
    """The body of a language-model helper call, once the caller and the LM are checked.

    `/create_random_sample` only picks one of the bundled examples: the real server answers
    it without its LM (`needs_lm=False`)."""
    sim = _sim(request)
    parsed = await read_body(request)
    if isinstance(parsed, Response):
        return parsed
    body, _ = parsed
    caller = authenticate(sim.settings, request.headers, _token(body))
    if not isinstance(caller, Caller):
        return caller
    if needs_lm and not (sim.settings.lm_available and sim.settings.lm_helpers):
        return detail(503, lm.LLM_NOT_INITIALIZED)
    return body


def _envelope_error(message: str, code: int = 500) -> JSONResponse:
    """The second error shape: HTTP 200 with the error inside the envelope."""
    return JSONResponse(
        {
            "data": None,
            "code": code,
            "error": message,
            "timestamp": int(time.time() * 1000),
            "extra": None,
        }
    )


async def create_sample(request: Request) -> Response:
    body = await _lm_request(request)
    if isinstance(body, Response):
        return body
    query = str(body.get("query") or body.get("description") or "").strip()
    if not query:
        return _envelope_error("create_sample failed: query is required", 400)
    language = str(body.get("vocal_language") or "unknown")
    instrumental = str(body.get("instrumental", False)).lower() in ("true", "1")
    return envelope(lm.create_sample(query, instrumental, language, body.get("temperature")))


async def create_random_sample(request: Request) -> Response:
    body = await _lm_request(request, needs_lm=False)
    if isinstance(body, Response):
        return body
    sample_type = str(body.get("sample_type") or "simple_mode")
    count = getattr(request.app.state, "random_samples", 0)
    request.app.state.random_samples = count + 1
    return envelope(lm.random_sample(sample_type, count))


async def format_input(request: Request) -> Response:
    body = await _lm_request(request)
    if isinstance(body, Response):
        return body
    raw = body.get("param_obj") or "{}"
    try:
        params = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return _envelope_error("format_sample failed: param_obj is not valid JSON")
    if not isinstance(params, dict):
        return _envelope_error("format_sample failed: param_obj must be a JSON object")
    prompt = str(body.get("prompt") or body.get("caption") or "")
    lyrics = str(body.get("lyrics") or "")
    if not prompt.strip() and not lyrics.strip():
        return _envelope_error("format_sample failed: caption or lyrics is required", 400)
    return envelope(lm.format_input(prompt, lyrics, params, body.get("temperature")))


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's shape for unknown paths and wrong methods: {"detail": "Not Found"}."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/release_task", release_task, methods=["POST"]),
        Route("/query_result", query_result, methods=["POST"]),
        Route("/v1/audio", audio, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/stats", stats, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/model_inventory", model_inventory, methods=["GET"]),
        Route("/v1/create_sample", create_sample, methods=["POST"]),
        Route("/create_random_sample", create_random_sample, methods=["POST"]),
        Route("/format_input", format_input, methods=["POST"]),
        *lora_routes(),
        *admin_routes(),
    ]


def create_app(
    settings: SimulatorSettings | None = None, *, sim: Simulator | None = None
) -> Starlette:
    """A fresh app with its own Simulator (`app.state.sim`); files are removed on shutdown."""
    simulator = sim or Simulator(settings or SimulatorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await simulator.aclose()

    prefix = simulator.settings.path_prefix
    table: list[BaseRoute] = [Mount(prefix, routes=routes())] if prefix else routes()
    app = Starlette(
        routes=table,
        middleware=[Middleware(FaultMiddleware, sim=simulator)],
        lifespan=lifespan,
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.sim = simulator
    return app
