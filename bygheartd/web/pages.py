"""What the library's page modules (albums.py, edit_forms.py) use of the app that mounts
them (`app.WebApp`): written as a Protocol so that they need not import the app, which
imports them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bygheartd.jobs import Job
from bygheartd.service.service import SongService
from bygheartd.web.auth import Access

__all__ = ["PageHost"]


class PageHost(Protocol):
    @property
    def service(self) -> SongService: ...

    def _guard(self, handler: Any, *, change: bool = False, api: bool = False) -> Any: ...

    def render(
        self, request: Request, access: Access | None, name: str, status: int = 200, **data: Any
    ) -> HTMLResponse: ...

    def _not_found(self, request: Request, detail: str, api: bool) -> Response: ...

    async def _rows(
        self, jobs: Sequence[Job], *, keepers_only: bool = False
    ) -> list[dict[str, Any]]: ...
