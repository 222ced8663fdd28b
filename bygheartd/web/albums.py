"""The album page (`/albums/<album_id>`): its tracks in order, each with its keeper's
player, played on through the album by the library's own play-on code; the total length,
the cost and the status; and the album to take away: its `.m3u8` and files one by one, or
one zip streamed as it is made (service/album_download.py says what goes out).

While its tracks are made the page follows them without a reload: on each `job` event of a
track (the library's own event stream) its script reads `/albums/<id>/fragment` again and
swaps in the tracks, the totals and the downloads; `progress` events move the bars.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bygheartd.service import album_download
from bygheartd.service.albums import AlbumView
from bygheartd.web import views
from bygheartd.web.auth import Access
from bygheartd.web.pages import PageHost

__all__ = ["AlbumPages", "album_summaries"]

LIBRARY_ALBUMS = 20  # the newest albums the library's first page lists


class AlbumPages:
    """The album routes, rendered and guarded by the library's `WebApp`."""

    def __init__(self, app: PageHost) -> None:
        self.app = app
        self.service = app.service

    def routes(self) -> list[BaseRoute]:
        page = self.app._guard
        return [
            Route("/albums/{album_id}", page(self.album), methods=["GET"]),
            Route("/albums/{album_id}/fragment", page(self.fragment), methods=["GET"]),
            Route("/albums/{album_id}/playlist.m3u8", page(self.playlist, api=True)),
            Route("/albums/{album_id}/album.zip", page(self.zipped, api=True)),
            Route("/albums/{album_id}/files/{name}", page(self.file, api=True)),
        ]

    async def album(self, request: Request, access: Access) -> Response:
        data = await self._data(request.path_params["album_id"])
        return self.app.render(request, access, "album.html", **data)

    async def fragment(self, request: Request, access: Access) -> Response:
        """The album page's body alone, for its script to bring the page up to date."""
        data = await self._data(request.path_params["album_id"])
        return self.app.render(request, access, "_album.html", **data)

    async def _data(self, ref: str) -> dict[str, Any]:
        view = await self.service.album(ref)
        rows = await self.app._rows(list(view.tracks), keepers_only=True)
        root = self.service.config.folders.output
        files = await asyncio.to_thread(album_download.album_files, view, root)
        playlist_name, _ = album_download.playlist(view)
        return {
            "view": view,
            "album": view.album,
            "rows": rows,
            "in_album": True,
            "files": files,
            "playlist_name": playlist_name,
            "has_keepers": any(j.keeper_record() for j in view.tracks),
            "charged": sum((await self.service.charged(list(view.tracks))).values()),
        }

    async def playlist(self, request: Request, access: Access) -> Response:
        view = await self.service.album(request.path_params["album_id"])
        name, text = album_download.playlist(view)
        return Response(
            text,
            media_type="audio/x-mpegurl",
            headers={"Content-Disposition": _attachment(name)},
        )

    async def zipped(self, request: Request, access: Access) -> Response:
        view = await self.service.album(request.path_params["album_id"])
        root = self.service.config.folders.output
        files = await asyncio.to_thread(album_download.album_files, view, root)
        chunks = album_download.zip_chunks(view.album.folder, files, album_download.playlist(view))
        # A sync iterator: Starlette reads it in a worker thread (the files, the zip).
        return StreamingResponse(
            chunks,
            media_type="application/zip",
            headers={"Content-Disposition": _attachment(f"{view.album.folder}.zip")},
        )

    async def file(self, request: Request, access: Access) -> Response:
        view = await self.service.album(request.path_params["album_id"])
        name = request.path_params["name"]
        root = self.service.config.folders.output
        files = await asyncio.to_thread(album_download.album_files, view, root)
        for item in files:
            if item.name == name:
                return FileResponse(
                    item.path, media_type=views.content_type(item.path), filename=name
                )
        return self.app._not_found(
            request, f"album {view.album.id} recorded no file {name!r}", True
        )


def _attachment(name: str) -> str:
    """A Content-Disposition for a download; the name is our own slug (plain characters)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name) or "album"
    return f'attachment; filename="{safe}"'


def album_summaries(albums: Sequence[AlbumView]) -> list[dict[str, Any]]:
    """What the library lists of each album: title, artist, tracks done, status, length."""
    return [
        {
            "id": v.album.id,
            "title": v.album.title,
            "artist": v.album.artist,
            "tracks": len(v.tracks),
            "done": v.done,
            "status": v.status,
            "seconds": v.seconds,
            "cost": v.cost,
        }
        for v in albums
    ]
