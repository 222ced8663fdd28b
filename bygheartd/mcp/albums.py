"""MCP `make_album` (DESIGN.md "Albums"): an album file's content, or `album_file` (read from
the same folders as generate_song's `lyrics_file`), validated whole and queued as a job per
track; the reply says what the whole album costs and what it leaves today."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from bygheartd.errors import BygheartdError
from bygheartd.jobs import Origin
from bygheartd.mcp import arguments
from bygheartd.mcp.lyrics_file import resolve_song_file
from bygheartd.mcp.records import JobRecord

if TYPE_CHECKING:
    from bygheartd.service.service import SongService

MAX_ALBUM_CHARS = 256 * 1024


class AlbumResult(BaseModel):
    """An album queued: its id and title, the whole cost, and a job record per track."""

    album: str = Field(description="the album id (`bygheartd show ALBUM` shows it too)")
    title: str
    artist: str | None
    folder: str = Field(description="where its tracks, playlist and album.json will be")
    cost: int = Field(description="credits the whole album costs (every track, every take)")
    credits_left_today: int | None = Field(
        description="left today once the album is paid; null: no daily cap"
    )
    budget: str = Field(description="the cost in words, and whether tracks will wait")
    tracks: list[JobRecord] = Field(description="one job per track, in track order")

    def summary(self) -> str:
        return (
            f"album {self.title!r} ({self.album}) queued: {len(self.tracks)} tracks, "
            f"{self.budget}; get_song with each track's id follows it"
        )


Register = Callable[[Callable[..., Any]], Callable[..., Any]]


def register_album_tools(tool: Callable[..., Register], service: Callable[[], SongService]) -> None:
    """Add `make_album` to a server built by `mcp.server.build_server`."""

    @tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        )
    )
    async def make_album(
        album: Annotated[
            Any,
            Field(
                description="the album file's content (YAML or TOML): `album:` title, "
                "`artist:`, `style:` (the album's sound, put before each track's own), any "
                "song-file key as a default, and `tracks:`, each with title and lyrics (or a "
                "description for Simple mode). Leave out for album_file",
            ),
        ] = None,
        album_file: Annotated[
            Any,
            Field(
                description="an album file (NAME.album.yaml) in the drafts folder (relative "
                "names are taken from there), or in archive or output; its `file:` tracks are "
                "song files beside it",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, AlbumResult]:
        """Queue an album (it spends credits): every track is a song of its own, made like
        generate_song's, recording its album and track number; delivered together into one
        folder with a playlist. Validated whole first: a bad album is refused with every
        problem (track, line, key, fix) and nothing is spent."""
        songs = service()
        try:
            if (album is None) == (album_file is None):
                raise ToolError("give the album's content (album) or album_file, one of them")
            if album_file is not None:
                raw = arguments.optional_text("album_file", album_file, 1000) or ""
                path, display = resolve_song_file(songs.config, raw)
                request = songs.parse_album(path, display=display)
                source, source_path = display, path
            else:
                if not isinstance(album, str) or not album.strip():
                    raise ToolError("album must be the album file's text (YAML or TOML)")
                if len(album) > MAX_ALBUM_CHARS:
                    raise ToolError(f"the album is over {MAX_ALBUM_CHARS} characters")
                name = "make_album.album.toml" if _looks_toml(album) else "make_album.album.yaml"
                request = songs.parse_album_text(album, name=name)
                source, source_path = "make_album", None
            outlook = await songs.album_outlook(request)
            view = await songs.submit_album(
                request, Origin.MCP, source=source, source_path=source_path
            )
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        root = songs.config.folders.output
        result = AlbumResult(
            album=view.album.id,
            title=view.album.title,
            artist=view.album.artist,
            folder=str(view.folder(root)),
            cost=view.cost,
            credits_left_today=outlook.left_today,
            budget=outlook.text(),
            tracks=[JobRecord.of(j) for j in view.tracks],
        )
        return CallToolResult(
            content=[TextContent(type="text", text=result.summary())],
            structured_content=result.model_dump(mode="json"),
        )


def _looks_toml(text: str) -> bool:
    """`album = "..."` or a `[[tracks]]` table: TOML; anything else is read as YAML."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return stripped.startswith("[[") or (
            "=" in stripped and ":" not in stripped.split("=", 1)[0]
        )
    return False
