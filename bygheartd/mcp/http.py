"""MCP over streamable HTTP inside `bygheartd run`: uvicorn in the daemon's own loop on a
pre-bound socket, a bearer token on every MCP request, Host/Origin checks against DNS
rebinding, and an open `/health` that shows no secret.

The same listener carries the library page when `[web] enabled = true`: the daemon hands in
its routes (`extra_routes`), so they sit behind the same Host/Origin check; with
`[mcp] http = false` the listener serves them (and /health) without /mcp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bygheartd.config import Config
from bygheartd.errors import ConfigError
from bygheartd.mcp.server import build_server
from bygheartd.service.service import SongService

__all__ = [
    "LOOPBACK_HOSTS",
    "HostCheck",
    "HostRules",
    "McpHttpServer",
    "allowed_hosts",
    "read_token",
]

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


_PORT = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORTS = frozenset({"80", "443"})
# What a Host header can name: a DNS name or IPv4 address, or a bracketed IPv6 literal.
_NAME = re.compile(r"[a-z0-9_.-]+|\[[0-9a-f:.]+\]")


def split_host(value: str) -> tuple[str, str | None] | None:
    """A Host value (`name`, `name:port`, `[v6]`, `[v6]:port`) as (name, port), or None when
    it is anything else. The port is digits only: `localhost:80@evil.example` and
    `localhost:8765.evil.example` are not "localhost with a port", which is what the SDK's
    prefix match (`host.startswith("localhost:")`) takes them for."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not name:
        return None
    if not rest:
        return name, None
    port = rest[1:]
    if rest[0] != ":" or not _PORT.fullmatch(port) or int(port) > 65535:
        return None
    return name, port


@dataclass(frozen=True)
class HostRules:
    """The Host and Origin values the HTTP listener answers, compared exactly.

    `ports` maps each accepted name to the ports it may carry: None for any numeric port (or
    none), else the set written in `[mcp] allowed_hosts` ("music.example.org:443"). Names are
    kept in lower case, as browsers and HTTP clients send them; a header is compared as sent,
    like the SDK does, so that the SDK's own check behind this one never disagrees.
    """

    ports: Mapping[str, frozenset[str] | None]

    @classmethod
    def of(cls, config: Config) -> HostRules:
        """The loopback names, the bound host when it is a specific address, and
        `[mcp] allowed_hosts` (each with any port unless it names one)."""
        entries: list[tuple[str, str | None]] = [(name, None) for name in LOOPBACK_HOSTS]
        if config.mcp.host not in _WILDCARDS:
            entries.append((_bracketed(config.mcp.host).lower(), None))
        for raw in config.mcp.allowed_hosts:
            entry = raw.strip().lower()
            if entry:
                entries.append(_configured(entry))
        ports: dict[str, frozenset[str] | None] = {}
        for name, port in entries:
            if name in ports and ports[name] is None:
                continue
            if port is None:
                ports[name] = None
            else:
                ports[name] = (ports.get(name) or frozenset()) | {port}
        return cls(ports)

    def host_ok(self, value: str) -> bool:
        parsed = split_host(value)
        if parsed is None or parsed[0] not in self.ports:
            return False
        allowed = self.ports[parsed[0]]
        if allowed is None or parsed[1] in allowed:
            return True
        # No port is the scheme's default one: `name:443` also names what a browser (or a
        # TLS proxy passing its Host on) sends for https://name/.
        return parsed[1] is None and not allowed.isdisjoint(_DEFAULT_PORTS)

    def origin_ok(self, value: str) -> bool:
        """`http(s)://<accepted host>[:port]`, nothing more (no path, no user, not "null")."""
        scheme, sep, rest = value.partition("://")
        return bool(sep) and scheme in ("http", "https") and self.host_ok(rest)

    def refusal(self, headers: Headers) -> Response | None:
        """The answer to a request with a foreign Host or Origin, or None to let it through.

        The status codes and texts are the SDK's (421 Misdirected Request for the Host, 403 for
        the Origin), so /health, /mcp and whatever else shares the listener answer alike."""
        hosts = headers.getlist("host")
        if len(hosts) != 1 or not self.host_ok(hosts[0]):
            log.info("refused an HTTP request for Host %r", ", ".join(hosts)[:200])
            return PlainTextResponse(
                "Invalid Host header: use a loopback name or one in [mcp] allowed_hosts",
                status_code=421,
            )
        origins = headers.getlist("origin")
        if origins and (len(origins) != 1 or not self.origin_ok(origins[0])):
            log.info("refused an HTTP request from Origin %r", ", ".join(origins)[:200])
            return PlainTextResponse("Invalid Origin header", status_code=403)
        return None

    def transport_security(self) -> TransportSecuritySettings:
        """The same rules in the SDK's terms, for its own check behind ours. The SDK can only
        say "any port" as a prefix (`name:*`), which accepts more than `host_ok`: ours runs
        first, so the SDK's never sees a request ours refused, and never refuses one ours
        accepted."""
        hosts: list[str] = []
        for name, ports in self.ports.items():
            if ports is None:
                hosts += [name, f"{name}:*"]
                continue
            if not ports.isdisjoint(_DEFAULT_PORTS):
                hosts.append(name)
            hosts += [f"{name}:{port}" for port in sorted(ports)]
        origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
        )


def _configured(entry: str) -> tuple[str, str | None]:
    """One `[mcp] allowed_hosts` entry as (name, port or None for any): `studio.local`,
    `music.example.org:443`, `name:*`, `[fe80::1]:8765`, or a bare IPv6 address."""
    name = entry[:-2] if entry.endswith(":*") else entry
    if name.count(":") > 1 and not name.startswith("["):
        name = f"[{name}]"  # a bare IPv6 address: its colons are not a port
    parsed = split_host(name)
    if parsed is None or not _NAME.fullmatch(parsed[0]):
        raise ConfigError(
            f"[mcp] allowed_hosts entry {entry!r} is not a host name with an optional port",
            key="mcp.allowed_hosts",
            hint='write names as a browser shows them: "studio.local" or '
            '"music.example.org:443" (no scheme, no path)',
        )
    return parsed


def allowed_hosts(config: Config) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding settings for `config` (see `HostRules.transport_security`)."""
    return HostRules.of(config).transport_security()


class HostCheck:
    """ASGI middleware in front of every route of the listener (/health and /mcp included):
    a request whose Host or Origin is not in `HostRules` is answered before any route runs,
    so a DNS-rebinding page can neither call MCP nor read /health's job counts."""

    def __init__(self, app: ASGIApp, rules: HostRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self.rules.refusal(Headers(scope=scope))
            if refused is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
                        "detail": "send the header 'Authorization: Bearer TOKEN', TOKEN "
                        "being the content of [mcp] token_file",
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


ExtraRoutes = Callable[[str | None], Sequence[BaseRoute]]
# Figures the daemon adds to /health (its event loop's lateness), by key.
HealthExtras = Callable[[], Mapping[str, Any]]


class McpHttpServer:
    """The daemon's HTTP listener: MCP at `http://HOST:PORT/mcp` (unless `mcp=False`),
    /health, and the routes `extra_routes(token)` gives (the library page), all sharing the
    daemon's service and one Host/Origin check."""

    def __init__(
        self,
        service: SongService,
        *,
        mcp: bool = True,
        extra_routes: ExtraRoutes | None = None,
        health_extras: HealthExtras | None = None,
    ) -> None:
        self.service = service
        self.mcp = mcp
        self.extra_routes = extra_routes
        self.health_extras = health_extras
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

    @property
    def base_url(self) -> str:
        return f"http://{_bracketed(self.config.mcp.host)}:{self.port}"

    def app(self, token: str | None) -> Starlette:
        rules = HostRules.of(self.config)
        extra = list(self.extra_routes(token)) if self.extra_routes is not None else []
        health = Route("/health", self._health, methods=["GET"])
        if not self.mcp or token is None:
            return Starlette(
                routes=[health, *extra], middleware=[Middleware(HostCheck, rules=rules)]
            )
        server = build_server(self.service)
        mcp_app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=False,  # SSE: the only mode that carries progress notifications
            transport_security=rules.transport_security(),
            host=self.config.mcp.host,
        )

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with server.session_manager.run():
                yield

        return Starlette(
            routes=[
                health,
                *extra,
                Mount("/", app=BearerToken(mcp_app, token)),
            ],
            middleware=[Middleware(HostCheck, rules=rules)],
            lifespan=lifespan,
        )

    async def _health(self, request: Request) -> Response:
        from bygheartd import __version__

        body: dict[str, Any] = {
            "status": "ok",
            "service": "bygheartd",
            "version": __version__,
            "engine": self.service.engine_running,
            "jobs": await self.service.counts(),
            "mcp": MCP_PATH if self.mcp else None,
            "web": self.extra_routes is not None,
        }
        if self.health_extras is not None:
            body.update(self.health_extras())
        return JSONResponse(body)

    async def start(self) -> None:
        """Bind, serve, and return once uvicorn accepts connections; errors are raised."""
        # The library alone needs no token (it logs in with `bygheartd web`); when one is
        # configured, scripts may use it there too.
        need_token = self.mcp or bool(self.config.mcp.token_file.strip())
        token = read_token(self.config) if need_token else None
        HostRules.of(self.config)  # a bad [mcp] allowed_hosts entry refuses before the bind
        from bygheartd.logs import register_secret

        if token is not None:
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
            what = "MCP over HTTP" if self.mcp else "the library page"
            raise ConfigError(
                f"{what} cannot listen on {host}:{self.config.mcp.port}: {exc.strerror}",
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
                raise ConfigError("the HTTP listener stopped while starting")
            await asyncio.sleep(0.02)
        if self.mcp:
            log.info("MCP over HTTP at %s", self.url)
        if self.extra_routes is not None:
            log.info("the library page at %s/ (log in with `bygheartd web`)", self.base_url)

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
