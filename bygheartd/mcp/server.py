"""The MCP face: the pinned tools, the song and guide resources and the `write_song` prompt,
served over stdio by `bygheartd mcp` and mounted over HTTP by `http.py`. Everything goes
through the service, so a song made here behaves like one dropped in the inbox.
"""

# No `from __future__ import annotations`: the tools are closures whose schemas (model names,
# the bpm range) depend on the backend, and the SDK reads their annotations as objects.

import contextlib
import inspect
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, TypeAlias

import anyio
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmptyResult,
    GetPromptResult,
    InputRequiredResult,
    PromptReference,
    ResourceLink,
    ResourceTemplateReference,
    SubscribeRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, ValidationError

from bygheartd import catalog
from bygheartd.config import Config
from bygheartd.errors import BygheartdError
from bygheartd.jobs import Job, JobStatus, Origin, iso
from bygheartd.mcp import arguments
from bygheartd.mcp.albums import register_album_tools
from bygheartd.mcp.arguments import plain_validation_text, schema, unknown_arguments
from bygheartd.mcp.completions import SongCompletions
from bygheartd.mcp.edit_tools import register_edit_tools
from bygheartd.mcp.feed import SongFeed
from bygheartd.mcp.lyrics_file import resolve_song_file
from bygheartd.mcp.prompts import write_song_prompt
from bygheartd.mcp.records import (
    BudgetHold,
    CancelResult,
    CreditsResult,
    DraftRecord,
    GenerateResult,
    JobRecord,
    ModelList,
    PlanLimits,
    PolishResult,
    SongList,
    SuggestResult,
    lyrics_fingerprint,
    lyrics_sent,
    progress_message,
    progress_value,
)
from bygheartd.mcp.view import song_view, view_meta
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.progress import Line
from bygheartd.service.service import SongService
from bygheartd.service.submission import Submission
from bygheartd.songs.request import SongRequest, title_from_description

__all__ = [
    "GUIDE_URI",
    "MAX_WAIT_SECONDS",
    "TAKE_BLOB_LIMIT",
    "TAKE_URI",
    "build_server",
    "run_stdio",
]

log = logging.getLogger(__name__)

GUIDE_URI = "bygheart://guide"
SONG_URI = "bygheart://songs/{job_id}"
TAKE_URI = "bygheart://songs/{job_id}/takes/{n}"
_TAKE_PATTERN = re.compile(r"^bygheart://songs/([^/]+)/takes/([^/]+)$")
_SONG_PATTERN = re.compile(r"^bygheart://songs/([^/]+)$")
# Read as a base64 blob up to this size; a bigger take is answered with its size and path
# (a 10 MiB take is ~14 MB of JSON, which most clients will not put in a model's context).
TAKE_BLOB_LIMIT = 10 * 1024 * 1024
AUDIO_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
}
NO_LYRICS = (
    "no lyrics: pass the complete lyrics (or lyrics_file), a description (the model writes "
    "the song), or instrumental=true"
)
MAX_WAIT_SECONDS = 50.0  # below the ~60 s after which some clients cut a tool call

INSTRUCTIONS = f"""bygheartd makes songs with the Bygheart Music API (or a self-hosted ACE-Step
server). Read the guide (get_guide, or the resource {GUIDE_URI}) before writing a song.
Write the complete lyrics with section tags ([Verse], [Chorus], ...) and a style caption,
then call generate_song; never shorten lyrics. suggest_song drafts a whole song and
polish_song improves lyrics and style, both without spending credits.
Or, when the user wants the model to write the song, pass a description instead of lyrics
(Simple mode); get_song then shows the lyrics it wrote under `generated`.
Generation takes a minute or more: pass wait_seconds (up to 50) or call get_song with
wait_seconds until the status is done; files come back as absolute paths and file:// URIs,
and each take as a resource link (bygheart://songs/<job>/takes/<n>) readable as audio.
Songs spend credits: check get_credits and list_models when in doubt."""

Lifespan: TypeAlias = Callable[[MCPServer[Any]], AbstractAsyncContextManager[Any]]
# The arguments are typed `Any` with a declared schema (see mcp/arguments.py): our own
# checks answer a bad value in the words a song file gets, never pydantic's.
WaitSeconds = Annotated[
    Any,
    # One type, not anyOf: clients that build a form or convert CLI text by the declared
    # type (the MCP Inspector) then send a number; numeric text is still accepted.
    schema(type="number", minimum=0),
    Field(
        description=f"wait up to this many seconds (at most {MAX_WAIT_SECONDS:g}; more is cut "
        "to that, with a note) for the song to finish, with progress notifications "
        "(0 = return at once); the job keeps running either way",
        examples=[0, 30, MAX_WAIT_SECONDS],
    ),
]
JobId = Annotated[
    Any,
    schema(type="string", minLength=6, maxLength=64),
    Field(description="a job id or a unique prefix of 6+", examples=["1m97hwtq4wnz9c", "1m97hw"]),
]
STATUS_NAMES = [s.value for s in JobStatus]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _asks_the_model(title: str) -> ToolAnnotations:
    """A tool that asks the backend's language model and spends nothing: read-only, but
    its answer differs each time and comes from outside."""
    return ToolAnnotations(
        title=title,
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=False,
        open_world_hint=True,
    )


def _result(
    model: BaseModel, text: str, links: Iterable[ResourceLink | TextContent] = ()
) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text), *links],
        structured_content=model.model_dump(mode="json"),
    )


def reflow(text: str) -> str:
    """Docstring-wrapped text as clients show it: no source indentation, and each paragraph
    on one line (a client wraps it to its own width; hard breaks at column 95 show as
    ragged lines in a tool picker). Blank lines and list items stay."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text).strip())
    out = []
    for paragraph in paragraphs:
        lines: list[str] = []
        for line in paragraph.splitlines():
            line = line.strip()
            if lines and not re.match(r"^([-*]|\d+\.) ", line):
                lines[-1] += " " + line
            else:
                lines.append(line)
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _description(fn: Callable[..., Any]) -> str:
    """The docstring reflowed (the SDK sends `__doc__` as it is, indentation and all)."""
    return reflow(fn.__doc__ or "")


def sentences(text: str, *more: str | None) -> str:
    """Text followed by further sentences, each after a full stop (a summary can end with a
    file path, which a note must not run into)."""
    out = text
    for extra in more:
        if extra:
            out = f"{out.rstrip()}{'' if out.rstrip().endswith(('.', '!', '?')) else '.'} {extra}"
    return out


def job_error(exc: BygheartdError) -> str:
    """A job lookup that failed, pointing at the tool an assistant has (the store's own
    hint names the `bygheartd list` command, which it cannot run)."""
    text = str(exc).removesuffix(": `bygheartd list` shows the ids")
    return text if "give more characters" in text else f"{text}: list_songs shows the known jobs"


def first_line_title(lyrics: str) -> str:
    """A title from the first sung line, for a call that gave lyrics and no title: the files
    then say what the song is ("neon-rivers-run-tonight.mp3"), not `song-<id>`. A song file
    gives its name instead; Simple mode's title comes from the description."""
    for line in lyrics.splitlines():
        line = line.strip()
        if line and not (line.startswith("[") and line.endswith("]")):
            return title_from_description(line)
    return ""


def audio_type(path: Path) -> str | None:
    """The MIME type of an audio file by its extension; None for other files."""
    return AUDIO_TYPES.get(path.suffix.lower())


async def _web_page(service: SongService, job_id: str) -> str | None:
    """The song's page in the library, when `[web] enabled` serves one."""
    config = service.config
    if not config.web.enabled:
        return None
    base = await service.logins.address()
    if not base:
        host = config.mcp.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        base = f"http://{host}:{config.mcp.port}"
    return f"{base.rstrip('/')}/songs/{job_id}"


async def queue_line(service: SongService, jobs: Sequence[Job]) -> Line | None:
    """The queue, read only when a song in `jobs` waits (its ETA comes from it)."""
    if any(j.status in (JobStatus.QUEUED, JobStatus.SUBMITTING) for j in jobs):
        return await service.line()
    return None


async def take_links(service: SongService, job: Job) -> list[ResourceLink | TextContent]:
    """Content items for a finished song: a resource link per take (readable as audio
    through TAKE_URI) and the library page when it is on."""
    if job.status is not JobStatus.DONE:
        return []
    links: list[ResourceLink | TextContent] = []
    for n, file in enumerate(job.files, start=1):
        mime = audio_type(file.path)
        if mime is None:
            continue
        links.append(
            ResourceLink(
                type="resource_link",
                uri=TAKE_URI.format(job_id=job.id, n=n),
                name=file.path.name,
                title=f"{job.title}, take {n}",
                description=f"take {n} of {job.title!r} ({file.path})",
                mime_type=mime,
                size=file.size,
            )
        )
    page = await _web_page(service, job.id)
    if page is not None:
        links.append(TextContent(type="text", text=f"Listen in the library: {page}"))
    return links


class _Progress:
    """Forwards job changes as progress notifications that only ever increase."""

    def __init__(self, ctx: Context[Any, Any]) -> None:
        self.ctx = ctx
        self.last = -1.0
        self.broken = False

    async def __call__(self, job: Job) -> None:
        value = progress_value(job)
        if self.broken or value <= self.last:
            return
        self.last = value
        try:
            await self.ctx.report_progress(value, 1.0, progress_message(job))
        except Exception as exc:  # a client that went away: the job goes on regardless
            log.debug("progress notification failed: %r", exc)
            self.broken = True


class _Server(MCPServer[Any]):
    """The SDK's server, except that an unknown argument name is refused (the SDK drops it
    silently, so `lyric=` would queue a song without lyrics), that arguments it still
    refuses itself (a required one left out) are answered without pydantic's text and
    links, that a prompt's missing argument is named with what it means, and that a take
    is read with its own audio type (a template has one fixed type)."""

    take_type: Callable[[str, str], Awaitable[str | None]] | None = None
    _arguments: dict[str, dict[str, str]] | None = None

    def follow_songs(self, feed: SongFeed) -> None:
        """`resources/subscribe` on a song (2025-era clients; 2026-07-28 clients open a
        `subscriptions/listen` stream, which the SDK serves from the feed's bus)."""

        async def subscribe(ctx: ServerRequestContext[Any, Any], params: Any) -> EmptyResult:
            uri = str(params.uri)
            match = _SONG_PATTERN.match(uri)
            if match is None:
                # Nothing else here ever changes (the guide, the view, a take once written):
                # honoured and never fired, as the SDK's own `subscriptions/listen` does.
                return EmptyResult()
            if ctx.request is not None:
                # Stateless HTTP: the connection ends with this reply, so nothing could
                # ever reach the client later.
                raise MCPError(
                    INVALID_REQUEST,
                    "resources/subscribe needs a lasting connection, which stateless HTTP "
                    "does not keep: use protocol 2026-07-28 (subscriptions/listen), stdio, "
                    "or get_song with wait_seconds",
                )
            try:
                job = await feed.service.get(match.group(1))
            except BygheartdError as exc:
                raise MCPError(INVALID_PARAMS, job_error(exc)) from None
            await feed.subscribe(SONG_URI.format(job_id=job.id), ctx.session)
            return EmptyResult()

        async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: Any) -> EmptyResult:
            feed.unsubscribe(str(params.uri), ctx.session)
            return EmptyResult()

        low = self._lowlevel_server
        low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def _argument_names(self, name: str) -> dict[str, str] | None:
        """A tool's arguments as its advertised schema declares them, each with its
        description; None if there is no such tool."""
        if self._arguments is None:
            self._arguments = {
                t.name: {
                    arg: str(spec.get("description", ""))
                    for arg, spec in t.input_schema.get("properties", {}).items()
                }
                for t in await self.list_tools()
            }
        return self._arguments.get(name)

    async def read_resource(
        self, uri: Any, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        contents = await super().read_resource(uri, context)
        match = _TAKE_PATTERN.match(str(uri))
        if match is None or self.take_type is None or isinstance(contents, InputRequiredResult):
            return contents
        mime = await self.take_type(match.group(1), match.group(2))
        return [
            ReadResourceContents(
                content=c.content,
                mime_type=mime if isinstance(c.content, bytes) and mime else c.mime_type,
                meta=c.meta,
            )
            for c in contents
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        valid = await self._argument_names(name)
        if valid is not None:
            problem = unknown_arguments(arguments, list(valid))
            if problem is not None:
                raise ToolError(f"Error executing tool {name}: {problem}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            doubled = f"Error executing tool {name}: {name}: "
            if not isinstance(exc, UnexpectedToolError) and str(exc).startswith(doubled):
                # A request error names its source, the tool, after the SDK's own prefix.
                once = f"Error executing tool {name}: " + str(exc).removeprefix(doubled)
                raise ToolError(once) from cause
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            text = plain_validation_text(cause, valid)
            raise ToolError(f"Error executing tool {name}: {text}") from cause

    async def list_tools(self) -> list[Tool]:
        """The tools, each schema saying that no other argument is accepted (see above)."""
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema.setdefault("additionalProperties", False)
        return tools

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        context: Context[Any, Any] | None = None,
    ) -> GetPromptResult | InputRequiredResult:
        """A missing or unknown argument is an invalid-params error that names it and says
        what it is for (the SDK answers a bare "Missing required arguments: {'topic'}")."""
        found = next((p for p in await self.list_prompts() if p.name == name), None)
        declared = (found.arguments or []) if found is not None else []
        given = arguments or {}
        problems = []
        unknown = unknown_arguments(given, [a.name for a in declared])
        if found is not None and unknown is not None:
            problems.append(str(unknown))
        for arg in declared:
            if arg.required and not str(given.get(arg.name) or "").strip():
                what = f" ({arg.description})" if arg.description else ""
                problems.append(f"{arg.name} is required{what}")
        if problems:
            raise MCPError(INVALID_PARAMS, f"prompt {name}: " + "; ".join(problems))
        return await super().get_prompt(name, arguments, context)


class _Songs:
    """The tools' logic; the closures in `build_server` only declare the schemas."""

    def __init__(self, service: SongService) -> None:
        self.service = service

    @property
    def config(self) -> Config:
        """Read at each call: a reload (SIGHUP) changes what the tools report and accept."""
        return self.service.config

    async def job(self, ref: Any) -> Job:
        try:
            text = arguments.job_ref(ref)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        try:
            return await self.service.get(text)
        except BygheartdError as exc:
            raise ToolError(job_error(exc)) from None

    async def wait(self, ctx: Context[Any, Any], job: Job, seconds: float) -> Job:
        """Follow a job for at most `seconds`; cancelling this never touches the job."""
        if seconds <= 0 or job.status.is_final:
            return job
        report = _Progress(ctx)
        with anyio.move_on_after(seconds):
            return await self.service.wait(job.id, timeout=seconds, on_progress=report)
        return await self.service.get(job.id)

    def build(
        self, args: dict[str, Any], lyrics_file: str | None
    ) -> tuple[SongRequest, dict[str, Any]]:
        """The validated request and the `Submission` fields for where it came from."""
        explicit = {k: v for k, v in args.items() if v is not None}
        given = [str(explicit.get(k, "")).strip() for k in ("lyrics", "description")]
        if lyrics_file is None and not any(given) and explicit.get("instrumental") in (None, False):
            # Said in the tool's words: the request's own check speaks of front matter.
            raise ToolError(NO_LYRICS)
        try:
            if lyrics_file is None:
                request = self.service.build_request(explicit, source="generate_song")
                return request, {"fallback_title": first_line_title(request.lyrics)}
            path, display = resolve_song_file(self.config, lyrics_file)
            request = self.service.parse_file(path, display=display, overrides=explicit)
        except BygheartdError as exc:
            # The SDK already says "Error executing tool generate_song: ".
            text = str(exc)
            raise ToolError(
                text.removeprefix("generate_song: ") if lyrics_file is None else text
            ) from None
        return request, {"fallback_title": path.stem, "source": display, "source_path": path}

    async def take(self, job_id: str, n: str) -> tuple[Job, int, Path]:
        """A finished job's take `n` (1-based, as in the take URIs), or ResourceNotFound."""
        try:
            job = await self.service.get(job_id)
        except BygheartdError as exc:
            raise ResourceNotFoundError(job_error(exc)) from None
        if job.status is not JobStatus.DONE:
            raise ResourceNotFoundError(
                f"job {job.id} is {job.status.value}: its takes are readable once it is done "
                "(get_song with wait_seconds waits for it)"
            )
        count = len(job.files)
        if not n.isdigit() or not 1 <= int(n) <= count:
            raise ResourceNotFoundError(f"job {job.id} has takes 1 to {count}, not {n!r}")
        return job, int(n), job.files[int(n) - 1].path

    async def take_type(self, job_id: str, n: str) -> str | None:
        try:
            return audio_type((await self.take(job_id, n))[2])
        except ResourceNotFoundError:
            return None

    def notes(self) -> list[str]:
        """Say so when no engine anywhere can run the job (no API key, say)."""
        problem = self.service.generation_blocked()
        if problem is None:
            return []
        return [f"Nothing can generate songs right now ({problem}); the job stays queued."]


def build_server(
    service: SongService, *, lifespan: Lifespan | None = None, feed_seconds: float = 0.5
) -> MCPServer[Any]:
    """The MCP server over one service (its store, and maybe an engine in this process).
    `feed_seconds`: how often song subscriptions look for status changes."""
    from bygheartd import __version__

    songs = _Songs(service)
    backend = service.config.backend  # a backend change needs a restart
    feed = SongFeed(
        service, lambda job_id: SONG_URI.format(job_id=job_id), poll_seconds=feed_seconds
    )
    server = _Server(
        "bygheartd",
        instructions=reflow(INSTRUCTIONS),
        version=__version__,
        lifespan=feed.lifespan(lifespan),
        extensions=[song_view()],  # MCP Apps: the song view, for hosts that render it
        subscriptions=feed.bus,  # 2026-07-28 `subscriptions/listen` streams
    )
    server.take_type = songs.take_type
    server.follow_songs(feed)

    def tool(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            return server.tool(description=_description(fn), **kwargs)(fn)

        return register

    def resource(uri: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            return server.resource(uri, description=_description(fn), **kwargs)(fn)

        return register

    def prompt(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            return server.prompt(description=_description(fn), **kwargs)(fn)

        return register

    bpm_low, bpm_high = catalog.bpm_range(backend)
    dur_low, dur_high = catalog.duration_range()
    names = catalog.acestep_models() if backend == "acestep" else list(catalog.HOSTED_MODELS)
    completions = SongCompletions(service, names)

    @server.completion()  # type: ignore[no-untyped-call,untyped-decorator]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, ResourceTemplateReference):
            return await completions.template(ref.uri, argument, context)
        return completions.prompt(ref.name, argument)

    text = {"type": "string"}

    @tool(
        annotations=ToolAnnotations(
            title="Generate a song",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
        meta=view_meta(),
    )
    async def generate_song(
        ctx: Context[Any, Any],
        lyrics: Annotated[
            Any,
            schema(type="string", maxLength=catalog.LYRICS_MAX_CHARS),
            Field(
                description="the complete lyrics with section tags ([Verse], [Chorus], ...); "
                "never shortened. Leave out for description, instrumental=true or lyrics_file",
            ),
        ] = None,
        description: Annotated[
            Any,
            schema(type="string", maxLength=catalog.STYLE_MAX_CHARS),
            Field(
                description="Simple mode instead of lyrics: describe the song in a sentence "
                "and the model writes the lyrics, style, tempo and key (with instrumental=true, "
                "no vocals). Never together with lyrics; the job's `generated` record shows "
                "what it wrote",
                examples=["a dreamy lo-fi song about rainy Tokyo nights, female vocals"],
            ),
        ] = None,
        lyrics_file: Annotated[
            Any,
            schema(**text),
            Field(
                description="a song file (front matter + lyrics, or plain lyrics) in the drafts "
                "folder (relative names are taken from there), or in archive or output; never "
                "the inbox. The other arguments override its keys",
            ),
        ] = None,
        style: Annotated[
            Any,
            schema(type="string", maxLength=catalog.STYLE_MAX_CHARS),
            Field(description="the style caption: genre, mood, instruments, vocals, production"),
        ] = None,
        title: Annotated[
            Any, schema(type="string", maxLength=200), Field(description="names the files")
        ] = None,
        model: Annotated[
            Any,
            schema(**text),
            Field(
                description="see list_models; default from the config. One of: "
                + ", ".join(names[:12]),
                examples=names[:3],
            ),
        ] = None,
        duration: Annotated[
            Any,
            schema(anyOf=[{"type": "number", "minimum": dur_low, "maximum": dur_high}, text]),
            Field(
                description=f"seconds ({dur_low:g}-{dur_high:g}), 'm:ss' or 'auto'",
                examples=[180, "3:30", "auto"],
            ),
        ] = None,
        bpm: Annotated[
            Any,
            schema(anyOf=[{"type": "integer", "minimum": bpm_low, "maximum": bpm_high}, text]),
            Field(description=f"tempo, {bpm_low}-{bpm_high}", examples=[124, "auto"]),
        ] = None,
        key: Annotated[
            Any,
            schema(**text),
            Field(
                description="note, optional # or b, major or minor; short forms work too",
                examples=["A minor", "F# major", "Am", "Bb", "F♯ minor"],
            ),
        ] = None,
        time_signature: Annotated[
            Any,
            schema(anyOf=[text, {"type": "integer"}]),
            Field(
                description="beats per bar: 2 = 2/4, 3 = 3/4, 4 = 4/4, 6 = 6/8",
                examples=["4", "3", "6/8"],
            ),
        ] = None,
        language: Annotated[
            Any,
            schema(**text),
            Field(
                description="language of the lyrics: a code or its name",
                examples=["en", "es", "ja", "English"],
            ),
        ] = None,
        instrumental: Annotated[
            Any, schema(type="boolean"), Field(description="no vocals, no lyrics")
        ] = None,
        takes: Annotated[
            Any,
            schema(type="integer", minimum=catalog.MIN_TAKES, maximum=catalog.MAX_TAKES),
            Field(description="versions; each costs"),
        ] = None,
        seed: Annotated[
            Any,
            schema(anyOf=[{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]),
            Field(description="fixed seed (0-4294967295), or one per take; omit for random"),
        ] = None,
        idempotency_key: Annotated[
            Any,
            schema(type="string", maxLength=200),
            Field(
                description="any string: a call with the same key and the same request "
                "returns the same job; the same key with a different request is an error",
            ),
        ] = None,
        wait_seconds: WaitSeconds = 0,
    ) -> Annotated[CallToolResult, GenerateResult]:
        """Queue a song (it spends credits) and return its job record, the cost, the credits
        left today and a fingerprint of the lyrics sent. Give the lyrics (Custom mode) or a
        description (Simple mode: the model writes the song). The same request again within the
        de-duplication window returns the existing job instead of paying twice."""
        if lyrics is not None and lyrics_file is not None:
            raise ToolError("give lyrics or lyrics_file, not both")
        try:
            wait = arguments.wait_seconds(wait_seconds, MAX_WAIT_SECONDS)
            lyrics_file = arguments.optional_text("lyrics_file", lyrics_file, 1000)
            idempotency_key = arguments.optional_text("idempotency_key", idempotency_key, 200)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        args = {
            "lyrics": lyrics,
            "description": description,
            "style": style,
            "title": title,
            "model": model,
            "duration": duration,
            "bpm": bpm,
            "key": key,
            "time_signature": time_signature,
            "language": language,
            "instrumental": instrumental,
            "takes": takes,
            "seed": seed,
        }
        # Missing lyrics are checked once, in `build` (the request model refuses the rest).
        request, origin = songs.build(args, lyrics_file)
        try:
            # The service stores the job and wakes the engine.
            enqueued = await songs.service.submit(
                Submission(
                    request,
                    Origin.MCP,
                    idempotency_key=idempotency_key or None,
                    # An explicit key names one job: another key's job is never the answer.
                    dedupe_seconds=(
                        None if idempotency_key else songs.config.mcp.dedupe_seconds or None
                    ),
                    **origin,
                )
            )
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        # Counted with the job just queued (and the queued ones ahead of it); for a job that
        # already existed, what is left now.
        outlook = await songs.service.budget_outlook(
            enqueued.job.credits if enqueued.created else 0, job=enqueued.job
        )
        hold = outlook.hold
        job = await songs.wait(ctx, enqueued.job, wait.seconds)
        digest, lines = lyrics_fingerprint(lyrics_sent(job.request))
        result = GenerateResult(
            **JobRecord.of(job, await queue_line(songs.service, [job])).model_dump(),
            cost=job.credits,
            credits_left_today=outlook.left_today,
            budget=outlook.text() if enqueued.created else None,
            lyrics_sha256=digest,
            lyrics_lines=lines,
            deduplicated=not enqueued.created,
            budget_hold=None
            if hold is None or job.status.is_final
            else BudgetHold(reason=hold.reason, resumes_at=iso(hold.resumes_at) or ""),
            notes=[n for n in (wait.note_for(job.status),) if n] + songs.notes(),
        )
        return _result(result, result.summary(), await take_links(songs.service, job))

    @tool(annotations=READ_ONLY, meta=view_meta())
    async def get_song(
        ctx: Context[Any, Any], job_id: JobId, wait_seconds: WaitSeconds = 0
    ) -> Annotated[CallToolResult, JobRecord]:
        """One song's job record: status, progress, ETA, and when done its files (absolute
        paths and file:// URIs) with a resource link per take, readable as audio. With
        wait_seconds it waits, reporting progress."""
        try:
            wait = arguments.wait_seconds(wait_seconds, MAX_WAIT_SECONDS)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        job = await songs.wait(ctx, await songs.job(job_id), wait.seconds)
        record = JobRecord.of(job, await queue_line(songs.service, [job]))
        return _result(
            record,
            sentences(record.summary(), wait.note_for(job.status)),
            await take_links(songs.service, job),
        )

    @tool(annotations=READ_ONLY)
    async def list_songs(
        status: Annotated[
            Any,
            schema(
                anyOf=[
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "string"},
                ]
            ),
            Field(
                description="only these statuses (default: all): a list, one name, or "
                "names separated by commas; one of " + ", ".join(STATUS_NAMES),
                examples=[["failed"], "held", "running,downloading"],
            ),
        ] = None,
        limit: Annotated[
            Any,
            schema(type="integer", minimum=1, maximum=arguments.LIMIT_MAX),
            Field(description="how many, newest first (1-200)"),
        ] = 20,
    ) -> Annotated[CallToolResult, SongList]:
        """Recent songs, newest first, optionally only some statuses."""
        try:
            statuses = arguments.statuses(status)
            count = arguments.limit_value(limit, 20)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        jobs = await songs.service.list(statuses, count)
        counts = await songs.service.counts()
        line = await queue_line(songs.service, jobs)
        result = SongList(jobs=[JobRecord.of(j, line) for j in jobs], counts=counts)
        return _result(result, result.summary())

    @tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True
        )
    )
    async def cancel_song(job_id: JobId) -> Annotated[CallToolResult, CancelResult]:
        """Cancel a song. A queued or held one is never sent. The API has no cancel call, so
        a song already generating still runs (and costs) on the server; it is not fetched."""
        before = await songs.job(job_id)
        try:
            job = await songs.service.cancel(before.id)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        sent = before.status not in (JobStatus.QUEUED, JobStatus.HELD)
        note = (
            "It was already sent: the server may still generate and charge it."
            if sent
            else "It was never sent, so it costs nothing."
        )
        result = CancelResult(**JobRecord.of(job).model_dump(), note=note)
        return _result(result, result.summary())

    @tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    async def retry_song(job_id: JobId) -> Annotated[CallToolResult, JobRecord]:
        """Queue a failed or cancelled song again: a new generation that costs credits again."""
        failed = await songs.job(job_id)
        try:
            job = await songs.service.retry(failed.id)  # the service wakes the engine
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        record = JobRecord.of(job, await queue_line(songs.service, [job]))
        return _result(record, f"Queued again: {record.summary()}")

    @tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True
        )
    )
    async def keep_take(
        job_id: JobId,
        take: Annotated[
            Any,
            schema(type="integer", minimum=1, maximum=64),
            Field(description="the take to keep, counting from 1 (as in the take URIs)"),
        ],
    ) -> Annotated[CallToolResult, JobRecord]:
        """Keep this take of a finished song instead of the quality gate's choice: the
        song's sidecar and records say so, and the keepers folder (when set) holds it."""
        job = await songs.job(job_id)
        if isinstance(take, bool) or not isinstance(take, int):
            raise ToolError("take must be a whole number, counting from 1")
        try:
            kept = await songs.service.keep(job.id, take)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        record = JobRecord.of(kept)
        return _result(record, f"Keeping take {take}: {record.summary()}")

    @tool(annotations=READ_ONLY)
    async def get_credits() -> Annotated[CallToolResult, CreditsResult]:
        """The local credit ledger (today, this month, per model) and the plan's limits."""
        result = CreditsResult.of(await songs.service.credits(), PlanLimits.of(songs.config))
        return _result(result, result.summary())

    @tool(annotations=READ_ONLY)
    async def list_models() -> Annotated[CallToolResult, ModelList]:
        """The models this backend offers, with their credit cost per take and purpose."""
        result = ModelList.of(songs.config)
        return _result(result, result.summary())

    draft_text = {"type": "string", "maxLength": catalog.LYRICS_MAX_CHARS}

    @tool(annotations=_asks_the_model("Suggest a song (inspiration)"))
    async def suggest_song(
        description: Annotated[
            Any,
            schema(type="string", maxLength=catalog.STYLE_MAX_CHARS),
            Field(
                description="what the song is about and how it should sound, in plain words; "
                "leave out for one of the server's example songs",
                examples=["a bittersweet synth-pop song about leaving a small town"],
            ),
        ] = None,
        instrumental: Annotated[
            Any, schema(type="boolean"), Field(description="no vocals: the draft has no lyrics")
        ] = None,
        language: Annotated[
            Any,
            schema(**text),
            Field(description="language of the lyrics: a code or its name", examples=["en"]),
        ] = None,
    ) -> Annotated[CallToolResult, SuggestResult]:
        """A complete draft song from the backend's language model: title, style, lyrics,
        bpm, key, duration and language, plus the same draft as a song file. It spends no
        credits and queues nothing: show it to the user, improve it, then pass its fields
        to generate_song. A backend without the model says so; generate_song with
        `description` (Simple mode) then lets the model write the song as it makes it."""
        try:
            about = arguments.optional_text("description", description, catalog.STYLE_MAX_CHARS)
            flag = arguments.optional_flag("instrumental", instrumental)
            lang = arguments.optional_text("language", language, 40)
            draft = await songs.service.inspire(
                about or None, instrumental=bool(flag), language=lang or None
            )
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        result = SuggestResult(
            draft=DraftRecord.of(draft.fields()), song_file=draft.text(), notes=draft.notes
        )
        return _result(result, result.summary())

    @tool(annotations=_asks_the_model("Polish a song's style and lyrics"))
    async def polish_song(
        lyrics: Annotated[
            Any,
            schema(**draft_text),
            Field(description="the lyrics with section tags ([Verse], [Chorus], ...)"),
        ],
        style: Annotated[
            Any,
            schema(type="string", maxLength=catalog.STYLE_MAX_CHARS),
            Field(description="the style caption: genre, mood, instruments, vocals"),
        ] = None,
        title: Annotated[
            Any,
            schema(type="string", maxLength=200),
            Field(description="the song's title, kept in the rewritten song file"),
        ] = None,
        bpm: Annotated[
            Any,
            schema(anyOf=[{"type": "integer"}, text]),
            Field(description="tempo in beats per minute, to guide the rewrite", examples=[96]),
        ] = None,
        duration: Annotated[
            Any,
            schema(anyOf=[{"type": "number"}, text]),
            Field(description="length in seconds or 'm:ss', to guide the rewrite"),
        ] = None,
        key: Annotated[
            Any,
            schema(**text),
            Field(description="note, optional # or b, major or minor", examples=["A minor", "Am"]),
        ] = None,
        time_signature: Annotated[
            Any,
            schema(anyOf=[text, {"type": "integer"}]),
            Field(description="beats per bar: 2, 3, 4 or 6 (6/8)", examples=["4", "3"]),
        ] = None,
        language: Annotated[
            Any,
            schema(**text),
            Field(description="language of the lyrics: a code or its name", examples=["en"]),
        ] = None,
    ) -> Annotated[CallToolResult, PolishResult]:
        """The backend's language model rewrites a song's style caption and lyrics (section
        tags, line breaks, a fuller caption); bpm, duration, key, time signature and
        language guide it. It spends no credits and queues nothing: returns before, after,
        what changed and the rewrite as a song file. Generate with generate_song after."""
        given = {
            "lyrics": lyrics,
            "style": style,
            "title": title,
            "bpm": bpm,
            "duration": duration,
            "key": key,
            "time_signature": time_signature,
            "language": language,
        }
        if not str(lyrics or "").strip():
            raise ToolError(
                "no lyrics: pass the lyrics to polish, with section tags ([Verse], [Chorus],"
                " ...); for a whole draft from a description, call suggest_song"
            )
        try:
            polished = await songs.service.polish_song({k: v for k, v in given.items() if v})
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        result = PolishResult(
            before=DraftRecord.of(polished.before.fields()),
            after=DraftRecord.of(polished.after.fields()),
            changes=polished.changes(),
            song_file=polished.after.text(),
            notes=polished.after.notes,
        )
        return _result(result, result.summary())

    # Plain text, not structured: a `{"result": guide}` copy beside the text would hand the
    # model the whole guide twice.
    @tool(annotations=READ_ONLY, structured_output=False)
    def get_guide() -> str:
        """The songwriting guide: the two ways to make a song (lyrics, or a description in
        Simple mode) and when to use which, styles, section tags and every option, with
        examples. Read it before writing a song; it is also the resource bygheart://guide."""
        return catalog.data_text("guide.md")

    @resource(GUIDE_URI, name="guide", mime_type="text/markdown")
    def guide() -> str:
        """The songwriting guide: styles, section tags, every option, with examples."""
        return catalog.data_text("guide.md")  # the same text as `bygheartd guide`

    @resource(SONG_URI, name="song", mime_type="application/json")
    async def song(job_id: str) -> str:
        """A song's sidecar once it is done; its job record before."""
        try:
            job = await songs.service.get(job_id)
        except BygheartdError as exc:
            raise ResourceNotFoundError(job_error(exc)) from None
        data = await songs.service.sidecar(job) or job.as_record()
        return json.dumps(data, indent=2, ensure_ascii=False)

    @resource(TAKE_URI, name="take", mime_type="audio/mpeg")
    async def take(job_id: str, n: str) -> str | bytes:
        """One take of a finished song as audio (base64), with its own audio type; a take
        over the size limit is answered with its size and path instead."""
        job, number, path = await songs.take(job_id, n)
        try:
            size = path.stat().st_size
            if size > TAKE_BLOB_LIMIT:
                return (
                    f"Take {number} of {job.title!r} is {size} bytes, over the "
                    f"{TAKE_BLOB_LIMIT} bytes read through MCP: open {path} ({path.as_uri()})"
                )
            return await anyio.to_thread.run_sync(path.read_bytes)
        except OSError as exc:
            raise ResourceNotFoundError(
                f"take {number} of job {job.id} cannot be read at {path}: {exc.strerror or exc}"
            ) from None

    @prompt(name="write_song", title="Write a song")
    def write_song(
        topic: Annotated[
            str, Field(description="what the song is about, in a few words or a sentence")
        ],
        genre: Annotated[
            str, Field(description="the genre, e.g. synth-pop; left out, the model picks one")
        ] = "",
        mood: Annotated[
            str, Field(description="the mood, e.g. bittersweet; left out, the model picks one")
        ] = "",
        language: Annotated[
            str, Field(description="the lyrics' language, a code or its name, e.g. en")
        ] = "",
        model: Annotated[
            str, Field(description="the model to generate with (see list_models)")
        ] = "",
    ) -> str:
        """Write a complete song file (front matter + tagged lyrics), then generate it."""
        return write_song_prompt(
            topic, genre, mood, guide_uri=GUIDE_URI, language=language, model=model
        )

    register_album_tools(tool, lambda: songs.service)  # make_album (mcp/albums.py)
    register_edit_tools(tool, lambda: songs.service)  # extend, stems, describe (edit_tools.py)
    return server


@contextlib.asynccontextmanager
async def _stdout_to_stderr(_: MCPServer[Any]) -> AsyncIterator[None]:
    """While serving stdio, a stray print() must never reach the protocol stream."""
    sys.stdout.flush()
    with contextlib.redirect_stdout(sys.stderr):
        yield


def run_stdio(config: Config) -> None:
    """`bygheartd mcp`: protocol on stdout, logs on stderr, the shared store, and an
    in-process engine only while no daemon holds the engine lock."""
    if not logging.getLogger().handlers:  # the CLI normally did this already
        from bygheartd.logs import setup_logging

        setup_logging(config.log.level)

    async def serve() -> None:
        with contextlib.redirect_stdout(sys.stderr):
            runtime = Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0)
            await runtime.__aenter__()
        try:
            server = build_server(runtime.service, lifespan=_stdout_to_stderr)
            await server.run_stdio_async()
            # The client closed stdin: a song it started and paid for is finished here
            # before exiting, rather than left half made until some engine next starts.
            await runtime.finish_in_flight(config.queue.job_deadline_seconds)
        finally:
            with contextlib.redirect_stdout(sys.stderr):
                await runtime.__aexit__(None, None, None)

    anyio.run(serve)
