"""MCP over streamable HTTP inside `bygheartd run`: uvicorn in the daemon's own loop on a
pre-bound socket, a bearer token on every MCP request, Host/Origin checks against DNS
rebinding, and an open `/health` that shows no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bygheartd.config import Config
from bygheartd.errors import ConfigError
from bygheartd.mcp.server import build_server
from bygheartd.service.service import SongService

__all__ = ["LOOPBACK_HOSTS", "McpHttpServer", "allowed_hosts", "read_token"]

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")
MCP_PATH = "/mcp"


def read_token(config: Config) -> str:
    """The bearer token from `[mcp] token_file`; without one HTTP refuses to start."""
    make = (
        "create one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "
        "~/.config/bygheartd/mcp-token && chmod 600 ~/.config/bygheartd/mcp-token` and set "
        '[mcp] token_file = "~/.config/bygheartd/mcp-token"'
    )
    if not config.mcp.token_file.strip():
        raise ConfigError(
            "[mcp] http = true needs a bearer token, but [mcp] token_file is not set",
            key="mcp.token_file",
            hint=make,
        )
    path = Path(config.mcp.token_file).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"[mcp] token_file {str(path)!r} cannot be read ({exc.__class__.__name__})",
            key="mcp.token_file",
            hint=make,
        ) from None
    if len(token) < 16:
        raise ConfigError(
            f"[mcp] token_file {str(path)!r} holds no usable token (16+ characters needed)",
            key="mcp.token_file",
            hint=make,
        )
    return token


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(config: Config) -> TransportSecuritySettings:
    """Host and Origin values accepted: the loopback names, the bound host when it is a
    specific address, and `[mcp] allowed_hosts` (each with any port unless it names one)."""
    names = list(LOOPBACK_HOSTS)
    if config.mcp.host not in _WILDCARDS:
        names.append(_bracketed(config.mcp.host))
    names += [_bracketed(h.strip()) for h in config.mcp.allowed_hosts if h.strip()]
    hosts: list[str] = []
    origins: list[str] = []
    for name in dict.fromkeys(names):
        has_port = name.rsplit("]", 1)[-1].count(":") == 1
        forms = [name] if has_port else [name, f"{name}:*"]
        hosts += forms
        origins += [f"{scheme}://{form}" for scheme in ("http", "https") for form in forms]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class BearerToken:
    """ASGI middleware: every request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, value = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self.token
            ):
                response = JSONResponse(
                    {
                        "error": "unauthorized",
                        "detail": "send the token from [mcp] token_file as "
                        "'Authorization: Bearer <token>'",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="bygheartd"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class McpHttpServer:
    """The daemon's MCP endpoint at `http://HOST:PORT/mcp`, sharing the daemon's service."""

    def __init__(self, service: SongService) -> None:
        self.service = service
        self.port: int | None = None
        self._sock: socket.socket | None = None
        self._uvicorn: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def config(self) -> Config:
        return self.service.config

    @property
    def url(self) -> str:
        return f"http://{_bracketed(self.config.mcp.host)}:{self.port}{MCP_PATH}"

    def app(self, token: str) -> Starlette:
        server = build_server(self.service)
        mcp_app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=False,  # SSE: the only mode that carries progress notifications
            transport_security=allowed_hosts(self.config),
            host=self.config.mcp.host,
        )

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with server.session_manager.run():
                yield

        return Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                Mount("/", app=BearerToken(mcp_app, token)),
            ],
            lifespan=lifespan,
        )

    async def _health(self, request: Request) -> Response:
        from bygheartd import __version__

        body: dict[str, Any] = {
            "status": "ok",
            "service": "bygheartd",
            "version": __version__,
            "engine": self.service.engine_running,
            "jobs": self.service.counts(),
            "mcp": MCP_PATH,
        }
        return JSONResponse(body)

    async def start(self) -> None:
        """Bind, serve, and return once uvicorn accepts connections; errors are raised."""
        token = read_token(self.config)
        from bygheartd.logs import register_secret

        register_secret(token)
        host = self.config.mcp.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (no 40 ms
        # delayed-ACK stall per streamed reply).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.config.mcp.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"MCP over HTTP cannot listen on {host}:{self.config.mcp.port}: {exc.strerror}",
                key="mcp.port",
                hint="pick another [mcp] port, or stop what uses this one",
            ) from None
        sock.set_inheritable(True)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app(token),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            log_config=None,
        )
        self._uvicorn = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigError("MCP over HTTP stopped while starting")
            await asyncio.sleep(0.02)
        log.info("MCP over HTTP at %s", self.url)

    async def stop(self) -> None:
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._uvicorn.force_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._task, timeout=2)
        if self._sock is not None:
            self._sock.close()
        self._uvicorn = self._task = self._sock = None
