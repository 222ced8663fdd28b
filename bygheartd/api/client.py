"""The async client for the Bygheart Music API and self-hosted ACE-Step 1.5 servers.

It speaks API.md (envelopes, double-encoded results, the three `file` forms), retries only
what is safe to retry, bounds every exchange as a whole (a reply that drips is cut off like
one that never comes) and every reply's size (read streamed, decoded in bounded steps,
refused past a limit fitting its endpoint: replies.py, decoding.py), and keeps the API key
out of every repr, message and log line. Whatever a server sends, what comes out is a value
or an ApiError with a reason, never another exception.
"""

from __future__ import annotations

import functools
import json
import logging
import mimetypes
import random
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio
import httpx

from bygheartd.api.decoding import ACCEPT_ENCODING
from bygheartd.api.download import (
    DownloadedFile,
    DownloadLimits,
    PartState,
    fetch_attempt,
    finish,
    resolve_audio_url,
)
from bygheartd.api.drafts import Draft, parse_draft
from bygheartd.api.errors import (
    SIMPLE_MODE_HINT,
    ApiError,
    AuthError,
    DownloadTooLarge,
    LmUnavailable,
    PlanError,
    ProtocolError,
    RateLimited,
    RefusedAudioUrl,
    RejectedError,
    TimedOut,
    TransientError,
    error_for_response,
    error_for_status,
    error_for_transport,
    redact,
)
from bygheartd.api.jsonsafe import TooDeep, nulled_note, read_json
from bygheartd.api.replies import ReplyLimits, ReplyTooLarge, read_body, with_body
from bygheartd.api.results import (
    LISTED_AGAIN,
    Submitted,
    TaskResult,
    TaskState,
    merge_listings,
    parse_task_entry,
    reported_seconds,
    task_id_problem,
)
from bygheartd.errors import ConfigError

__all__ = [
    "ApiError",
    "AuthError",
    "BygheartClient",
    "DownloadLimits",
    "DownloadTooLarge",
    "DownloadedFile",
    "Draft",
    "LmUnavailable",
    "PlanError",
    "ProtocolError",
    "RateLimited",
    "RefusedAudioUrl",
    "RejectedError",
    "ReplyLimits",
    "ReplyTooLarge",
    "RetryPolicy",
    "Submitted",
    "TaskResult",
    "TaskState",
    "TimedOut",
    "TransientError",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Backend = Literal["bygheart", "acestep"]
# How many takes' reported durations a client remembers between the poll that reported
# them and their download (the bound on what a download may decode to).
_REMEMBERED_TAKES = 4096
# A submit reply's `queue_position` past this says nothing about a wait (ACE-Step's queue
# holds 200 tasks by default, `queue_maxsize`): it is ignored, never turned into a time.
MAX_QUEUE_POSITION = 10_000


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, for transient failures only.

    `attempts` counts every try, the first included; tests pass tiny delays.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    jitter: bool = True

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based); a server hint is a floor."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        wait = random.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


class _Secret:
    """Holds the key; every way of printing it shows a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "'***'" if self._value else "None"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the API key holder cannot be pickled")


def _form_fields(body: Mapping[str, Any]) -> dict[str, str]:
    """The JSON body as multipart form fields (for uploads of source audio).

    A form field holds one text, and the server reads a text where it wants a list as a
    one-item list; lists (`track_classes`) therefore travel in `param_obj`, the JSON object
    the server reads for any field the form does not carry.
    """
    fields: dict[str, str] = {}
    nested: dict[str, Any] = {}
    for name, value in body.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, str):
            fields[name] = value
        elif isinstance(value, int | float):
            fields[name] = str(value)
        elif isinstance(value, list | tuple):
            nested[name] = list(value)
        else:
            fields[name] = json.dumps(value)
    if nested:
        fields["param_obj"] = json.dumps(nested)
    return fields


class _Phase:
    """How far one exchange got, from httpcore's trace events, so that a timed-out submit
    can tell "nothing was sent" (safe to retry) from "sent, reply lost" (outcome unknown)."""

    _EVENTS = (
        ("connection.connect_tcp.started", "connecting"),
        (".send_request_headers.started", "sending the request"),
        (".receive_response_headers.started", "waiting for the reply"),
        (".receive_response_body.started", "reading the reply"),
    )

    def __init__(self, traced: bool) -> None:
        # Without httpcore's trace events (a custom transport) nothing can be proven unsent.
        self.name = "starting" if traced else "in flight"
        self.sent = not traced

    async def event(self, name: str, info: dict[str, Any]) -> None:
        for suffix, phase in self._EVENTS:
            if name.endswith(suffix):
                self.name = phase
                if phase != "connecting":
                    self.sent = True


class BygheartClient:
    """One connection pool to one API; safe to share between tasks of one event loop.

    `timeout` bounds each exchange as a whole (connecting, sending and the complete reply),
    and, for downloads, the wait for the reply to begin; `download_limits` bound the body.
    `reply_limits` bound the size of every other reply (read streamed, refused past it).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        backend: Backend = "bygheart",
        timeout: float = 30,
        download_limits: DownloadLimits | None = None,
        reply_limits: ReplyLimits | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if backend not in ("bygheart", "acestep"):
            raise ConfigError(f"unknown backend {backend!r}: use 'bygheart' or 'acestep'")
        if backend == "bygheart" and not api_key:
            raise AuthError("the hosted Bygheart API needs an API key (bgh_...)")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"[api] base_url {base_url!r} must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.backend: Backend = backend
        self.retry = retry or RetryPolicy()
        self.requests_made: Counter[str] = Counter()
        self.timeout = float(timeout)
        self.download_limits = download_limits or DownloadLimits()
        self.reply_limits = reply_limits or ReplyLimits()
        # file reference -> the take's duration as the poll reported it
        self._take_seconds: OrderedDict[str, float] = OrderedDict()
        self._key = _Secret(api_key)
        self._traced = transport is None or isinstance(transport, httpx.AsyncHTTPTransport)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            # No pool limit: our own limits bound concurrency (max_in_flight submits, the
            # delivery slots, one poll), so a slow download never makes a poll or a submit
            # wait for a connection.
            # An idle connection is let go well before a server closes it (uvicorn, and so
            # ACE-Step and the simulator, after 5 s): a request sent on a connection the
            # server has just closed is lost, and a lost submit is an unknown outcome.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=20, keepalive_expiry=2.0
            ),
        )

    def __repr__(self) -> str:
        return (
            f"BygheartClient(base_url={self.base_url!r}, backend={self.backend!r}, "
            f"api_key={self._key!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing -------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        key = self._key.reveal()
        if not key:
            return {}
        if not (key.isascii() and key.isprintable()):
            # httpx would raise UnicodeEncodeError from deep inside the request
            raise AuthError(
                "the API key holds characters an HTTP header cannot carry (only printable "
                "ASCII can): look for a curly quote, a line break or a stray character in it"
            )
        return {"Authorization": f"Bearer {key}"}

    def _url(self, path: str) -> httpx.URL:
        return httpx.URL(self.base_url + path)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        limit: int,
        kind: str,
        submit: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One whole exchange, reply body included, within `timeout` seconds.

        httpx's timeouts bound each read, so a reply that drips a byte a second would hold
        the caller (and every job waiting on it) forever; the cancel scope bounds the total.
        The body is read streamed and decoded here, at most `limit` bytes (ReplyTooLarge
        past it, naming `kind`, what the endpoint is); an error reply is read up to
        `reply_limits.error_bytes` for its message. The reply returned holds the body.
        """
        phase = _Phase(self._traced)
        failure: ApiError | None = None
        headers = {**self._auth_headers(), "Accept-Encoding": ACCEPT_ENCODING}
        with anyio.CancelScope(deadline=anyio.current_time() + self.timeout) as scope:
            try:
                async with self._http.stream(
                    method,
                    self._url(path),
                    headers=headers,
                    extensions={"trace": phase.event} if self._traced else None,
                    **kwargs,
                ) as response:
                    failed = not response.is_success
                    body = await read_body(
                        response,
                        limit=self.reply_limits.error_bytes if failed else limit,
                        what=what,
                        kind=kind,
                        keep_prefix=failed,
                    )
                    return with_body(response, body)
            except httpx.HTTPError as exc:
                # Built here, raised outside the handler: no chained httpx error (with its
                # request and headers) rides along with ours.
                failure = error_for_transport(
                    exc, what=what, secret=self._key.reveal(), submit=submit
                )
        if scope.cancelled_caught:
            failure = self._timed_out(what, phase, submit=submit)
        assert failure is not None
        raise failure

    def _timed_out(self, what: str, phase: _Phase, *, submit: bool) -> TimedOut:
        limit = f"no complete reply within {self.timeout:g} s ([api] timeout_seconds"
        if not phase.sent:
            return TimedOut(
                f"{what}: no connection within {self.timeout:g} s ([api] timeout_seconds); "
                "nothing was sent",
                limit="api.timeout_seconds",
            )
        if submit:
            return TimedOut(
                f"{what}: {limit}, still {phase.name}): the request was sent and its reply "
                "lost: the task may or may not exist",
                limit="api.timeout_seconds",
                outcome_unknown=True,
            )
        return TimedOut(
            f"{what}: {limit}, the limit of the whole exchange; still {phase.name})",
            limit="api.timeout_seconds",
        )

    def _envelope(self, response: httpx.Response, what: str, *, wrapped: bool = True) -> Any:
        """The `data` of a successful reply; both error shapes of API.md become ApiErrors."""
        secret = self._key.reveal()
        if not response.is_success:
            raise error_for_response(response, what=what, secret=secret)
        nulled: list[str] = []
        try:
            body = read_json(response.content, nulled=nulled)
        except TooDeep as exc:
            raise ProtocolError(f"{what}: HTTP {response.status_code}: {exc}") from None
        except ValueError:
            snippet = redact(response.content[:80].decode("utf-8", "replace"), secret)
            raise ProtocolError(
                f"{what}: HTTP {response.status_code}: reply is not JSON: {snippet!r}",
                response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{what}: reply is a JSON {type(body).__name__}, not an object")
        if nulled:
            log.warning("%s: %s", what, nulled_note("the reply", nulled))
        code = body.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            # No usable code: an `error` with no `data` is still an error (a wrapper's shape).
            code = 500 if body.get("error") and body.get("data") is None else 200
        if code != 200:
            message = body.get("error") or body.get("message") or f"code {code}"
            text = redact(message if isinstance(message, str) else json.dumps(message), secret)
            status = code if 400 <= code <= 599 else 500
            raise error_for_status(
                status,
                text,
                what=what,
                body=body,
                retry_after=response.headers.get("retry-after"),
            )
        if "data" not in body:
            if wrapped:
                raise ProtocolError(f"{what}: reply has no `data`")
            return body
        return body["data"]

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        retry_if: Callable[[TransientError], bool] = lambda _err: True,
    ) -> T:
        attempts = max(1, self.retry.attempts)
        for number in range(attempts):
            try:
                return await attempt()
            except TransientError as err:
                if number + 1 >= attempts or not retry_if(err):
                    raise
                wait = self.retry.delay(number, err.retry_after)
                log.warning("%s; retry %d of %d in %.2fs", err, number + 1, attempts - 1, wait)
            await anyio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the API ----------------------------------------------------------------------

    async def submit(
        self,
        body: Mapping[str, Any],
        *,
        src_audio: Path | None = None,
        ref_audio: Path | None = None,
    ) -> Submitted:
        """POST /release_task. Retried only when the request provably created nothing.

        Audio to edit goes as the multipart part `src_audio`, a style reference as
        `ref_audio` (the server refuses local paths in JSON).
        A reply lost after sending raises TransientError(outcome_unknown=True), unretried:
        the API has no idempotency key and a second task costs credits twice.
        """
        what = "POST /release_task"
        uploads: dict[str, tuple[str, bytes, str]] = {}
        for part, audio in (("src_audio", src_audio), ("ref_audio", ref_audio)):
            if audio is not None:
                data = await anyio.to_thread.run_sync(Path(audio).read_bytes)
                ctype = mimetypes.guess_type(audio.name)[0] or "application/octet-stream"
                uploads[part] = (audio.name, data, ctype)

        async def attempt() -> Submitted:
            self.requests_made["submit"] += 1
            payload: dict[str, Any] = {"json": dict(body)}
            if uploads:
                payload = {"data": _form_fields(body), "files": dict(uploads)}
            response: httpx.Response | None = None
            try:
                response = await self._send(
                    "POST",
                    "/release_task",
                    what=what,
                    limit=self.reply_limits.submit_bytes,
                    kind="a submit reply",
                    submit=True,
                    **payload,
                )
                data = self._envelope(response, what)
                task_id = data.get("task_id") if isinstance(data, dict) else None
                if not isinstance(task_id, str) or not task_id:
                    raise ProtocolError(f"{what}: reply has no task_id")
                problem = task_id_problem(task_id)
                if problem is not None:
                    raise ProtocolError(f"{what}: {problem}: not a task id bygheartd can use")
            except ProtocolError as exc:
                # A 2xx we cannot read (or that was too large to read) may still have
                # created a task.
                message = exc.message
                status = response.status_code if response is not None else exc.status
            else:
                position = data.get("queue_position")
                if isinstance(position, bool) or not isinstance(position, int):
                    position = None
                elif not 0 <= position <= MAX_QUEUE_POSITION:
                    position = None  # no queue is that long: a position that says nothing
                return Submitted(task_id=task_id, queue_position=position)
            raise TransientError(
                message + " (the task may or may not exist)",
                status,
                outcome_unknown=True,
            )

        return await self._retrying(attempt, retry_if=lambda err: not err.outcome_unknown)

    async def query(
        self, task_ids: Sequence[str], *, chunk_size: int = 50
    ) -> dict[str, TaskResult]:
        """POST /query_result in chunks; every requested id gets a result (UNKNOWN if absent)."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        ids = list(dict.fromkeys(task_ids))
        results: dict[str, TaskResult] = {}
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            found = await self._retrying(functools.partial(self._query, chunk))
            for task_id in chunk:
                results[task_id] = found.get(task_id) or TaskResult(task_id, TaskState.UNKNOWN)
        return results

    async def _query(self, chunk: list[str]) -> dict[str, TaskResult]:
        what = "POST /query_result"
        self.requests_made["query"] += 1
        ids = f"{len(chunk)} id{'s' if len(chunk) != 1 else ''}"
        response = await self._send(
            "POST",
            "/query_result",
            what=what,
            limit=self.reply_limits.poll(len(chunk)),
            kind=f"a poll of {ids}",
            json={"task_id_list": chunk},
        )
        data = self._envelope(response, what)
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ProtocolError(f"{what}: `data` is a {type(data).__name__}, not a list")
        wanted = set(chunk)
        listed: dict[str, list[TaskResult | ProtocolError]] = {}
        for entry in data:
            if not isinstance(entry, dict):
                continue
            task_id = entry.get("task_id")
            if isinstance(task_id, str) and task_id in wanted:
                try:
                    parsed: TaskResult | ProtocolError = parse_task_entry(entry)
                except ProtocolError as exc:
                    parsed = exc
                listed.setdefault(task_id, []).append(parsed)
        found: dict[str, TaskResult] = {}
        for task_id, listings in listed.items():
            # Listed twice (a success, then a failure): never the last one silently (F13).
            found[task_id] = result = merge_listings(task_id, listings)
            said = [n for n in result.notes if n.startswith(LISTED_AGAIN)]
            if len(listings) > 1 and said and result.state is not TaskState.SUCCEEDED:
                log.warning("task %s: %s", task_id, said[0])  # a success: on the job
            for take in result.outputs:
                self._remember(take.file, reported_seconds(take.metas))
        return found

    def _remember(self, file_ref: str, seconds: float | None) -> None:
        """A take's reported duration, for the download that follows the poll."""
        if seconds is None:
            return
        self._take_seconds[file_ref] = seconds
        self._take_seconds.move_to_end(file_ref)
        while len(self._take_seconds) > _REMEMBERED_TAKES:
            self._take_seconds.popitem(last=False)

    async def download(
        self, file_ref: str, stem: Path, *, seconds: float | None = None
    ) -> DownloadedFile:
        """Fetch one result file to stem + ext (ext from the bytes), resuming a .part.

        `seconds` is the take's duration as the server reported it (its `metas`); None: the
        one the last poll of this client reported for `file_ref`, if any; 0 (or any value
        that is no duration): unknown. What the file may decode to is bounded by it
        (`DownloadLimits.ceiling`: the absolute cap when unknown).

        Raises FileExistsError rather than overwrite; RejectedError on 403/404 (unretried);
        RefusedAudioUrl (a RejectedError) for a URL or redirect to another host, and its
        DownloadTooLarge for a file past the ceiling (a compression bomb); ProtocolError for
        a reply that is not audio or a file cut short; TimedOut when every attempt ran past
        the limits (each retry resumes the part).
        """
        if seconds is None:
            seconds = self._take_seconds.get(file_ref)
        url = resolve_audio_url(self.base_url, file_ref)
        what = f"GET {url.raw_path.decode('ascii', 'replace')[:200]}"
        state = PartState(Path(stem))

        async def attempt() -> None:
            self.requests_made["download"] += 1
            await fetch_attempt(
                self._http,
                url,
                self._auth_headers(),
                state,
                what=what,
                secret=self._key.reveal(),
                limits=self.download_limits,
                reply_seconds=self.timeout,
                seconds=seconds,
            )

        await self._retrying(attempt)
        return await finish(state, what=what)

    # -- the language-model helpers (they spend no generation) -------------------------

    async def create_sample(
        self,
        query: str,
        *,
        instrumental: bool = False,
        language: str | None = None,
        temperature: float = 0.85,
    ) -> Draft:
        """POST /v1/create_sample: a draft (style, lyrics, metas) from a description."""
        body = {
            "query": query,
            "instrumental": instrumental,
            "vocal_language": language or "unknown",
            "temperature": temperature,
        }
        return await self._lm_call("/v1/create_sample", body, "inspiration")

    async def create_random_sample(self, sample_type: str = "custom_mode") -> Draft:
        """POST /create_random_sample: one of the server's bundled example songs."""
        return await self._lm_call(
            "/create_random_sample", {"sample_type": sample_type}, "inspiration"
        )

    async def format_input(
        self,
        prompt: str,
        lyrics: str,
        *,
        params: Mapping[str, Any] | None = None,
        temperature: float = 0.85,
    ) -> Draft:
        """POST /format_input: the model's rewrite of a style and lyrics. `params` (bpm,
        duration, key_scale, time_signature, language) travel as the JSON string
        `param_obj`, as the server expects."""
        body: dict[str, Any] = {"prompt": prompt, "lyrics": lyrics, "temperature": temperature}
        given = {k: v for k, v in (params or {}).items() if v is not None}
        if given:
            body["param_obj"] = json.dumps(given)
        return await self._lm_call("/format_input", body, "polish")

    async def _lm_call(self, path: str, body: Mapping[str, Any], purpose: str) -> Draft:
        """One helper call: transient failures retried (nothing is spent), a missing
        endpoint or language model raised as LmUnavailable, never retried."""
        what = f"POST {path}"

        def unavailable(reason: str, status: int | None) -> LmUnavailable:
            return LmUnavailable(
                f"{what}: this backend does not offer inspiration and polish ({reason}); "
                f"{SIMPLE_MODE_HINT}, and the model writes the song as it generates it",
                status,
            )

        async def attempt() -> Draft:
            self.requests_made[purpose] += 1
            response = await self._send(
                "POST",
                path,
                what=what,
                limit=self.reply_limits.helper_bytes,
                kind="a helper's draft",
                json=dict(body),
            )
            if response.status_code in (404, 405):
                raise unavailable(f"HTTP {response.status_code}: no such endpoint", 404)
            try:
                data = self._envelope(response, what)
            except ApiError as exc:
                text = exc.message.lower()
                if "llm not initiali" in text:
                    raise unavailable("its language model is not loaded", exc.status) from None
                if "llm init failed" in text:  # HTTP 500: the lazy load on first use failed
                    raise unavailable(
                        "its language model is not loaded: it failed to load, see the server's log",
                        exc.status,
                    ) from None
                raise
            draft = parse_draft(data)
            if draft is None:
                raise ProtocolError(f"{what}: `data` is not an object")
            return draft

        return await self._retrying(attempt)

    async def health(self) -> dict[str, Any] | None:
        """GET /health (`data` of the envelope); None when the server has no such endpoint."""
        return await self._optional_get("/health")

    async def stats(self) -> dict[str, Any] | None:
        """GET /v1/stats (ACE-Step queue counters); None when unavailable."""
        return await self._optional_get("/v1/stats")

    async def probe(self) -> dict[str, Any]:
        """Whether the server answers, for the server pool: `/v1/stats` (its queue
        counters), else `/health`; {} when it answers without either. Unlike `stats`, a
        server that cannot be reached, times out or answers 5xx is raised (it is down)."""
        for path in ("/v1/stats", "/health"):
            what = f"GET {path}"
            response = await self._status_get(path, what)
            if response.status_code in (404, 405):
                continue
            data = self._envelope(response, what, wrapped=False)
            return data if isinstance(data, dict) else {}
        return {}

    async def models(self) -> list[str] | None:
        """GET /v1/models (an OpenAI-style list, not an envelope): the ids of the models the
        server offers, for `config check --online`; None when it has no such endpoint.
        Unlike `health`, a server that cannot be reached is raised, never None."""
        what = "GET /v1/models"
        response = await self._status_get("/v1/models", what)
        if response.status_code in (404, 405):
            return None
        data = self._envelope(response, what, wrapped=False)
        if isinstance(data, dict):
            data = data.get("data", data.get("models"))
        if not isinstance(data, list):
            raise ProtocolError(f"{what}: no list of models in the reply")
        names = [m.get("id") or m.get("name") for m in data if isinstance(m, dict)]
        return [str(n) for n in names if n]

    async def model_inventory(self) -> dict[str, Any] | None:
        """GET /v1/model_inventory (header key, enveloped): every DiT model the server has,
        whether it is loaded and which tasks it supports (ACESTEP-TASKS.md §2.2; not
        `/v1/models`, which lists only loaded ids, and none before the first job). None when
        the server has no such route (the hosted API); read with `api.inventory`."""
        return await self._optional_object("/v1/model_inventory")

    async def lora_status(self) -> dict[str, Any] | None:
        """GET /v1/lora/status (header key, enveloped): the server's loaded LoRA adapters
        (read with `api.lora`). None when the server has no such route (the hosted API, a
        wrapper that hides it); HTTP 500 "Model not initialized" before its model loads is
        raised like any refusal (`api.lora.not_initialized` tells it apart)."""
        return await self._optional_object("/v1/lora/status")

    async def _optional_object(self, path: str) -> dict[str, Any] | None:
        """GET `path`, enveloped, whose `data` is an object; None when the server has no
        such route (404/405)."""
        what = f"GET {path}"
        response = await self._status_get(path, what)
        if response.status_code in (404, 405):
            return None
        data = self._envelope(response, what)
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: `data` is not an object")
        return data

    async def load_lora(self, lora_path: str) -> dict[str, Any]:
        """POST /v1/lora/load `{"lora_path": ...}`: load an adapter on the server (a path
        there). Server-global state: called once per server by the pool, never per job. A
        refusal (HTTP 400 `❌ ...`, 500) is raised with the server's words; not retried."""
        what = "POST /v1/lora/load"
        response = await self._send(
            "POST",
            "/v1/lora/load",
            what=what,
            limit=self.reply_limits.status_bytes,
            kind="a status reply",
            json={"lora_path": lora_path},
        )
        data = self._envelope(response, what)
        return data if isinstance(data, dict) else {}

    async def _status_get(self, path: str, what: str) -> httpx.Response:
        return await self._send(
            "GET", path, what=what, limit=self.reply_limits.status_bytes, kind="a status reply"
        )

    async def _optional_get(self, path: str) -> dict[str, Any] | None:
        what = f"GET {path}"
        try:
            response = await self._status_get(path, what)
        except TransientError as err:
            # No connection: no such server here. A probe that timed out is raised, so
            # that nobody reads "no /health endpoint" into a server that hangs.
            if err.status is None and not isinstance(err, TimedOut):
                log.info("%s: %s", what, err)
                return None
            raise
        if response.status_code in (404, 405):
            return None
        data = self._envelope(response, what, wrapped=False)
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: `data` is not an object")
        return data
