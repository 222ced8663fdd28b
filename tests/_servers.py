"""Real HTTP servers on 127.0.0.1 for the client tests: a scripted Starlette app under
uvicorn (replays transcript bodies and injects faults) and a raw socket server that
accepts a request and then hangs up or resets, which no ASGI app can do.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

PREFIX = "/bygheartsong/api"
AUDIO_DIR = "/srv/acestep/api_audio/"


def envelope(data: Any, code: int = 200, error: str | None = None) -> dict[str, Any]:
    return {"data": data, "code": code, "error": error, "timestamp": 1795476765685, "extra": None}


@dataclass
class Reply:
    """One scripted answer. `truncate_at`: send that many body bytes, then hang up."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_at: int | None = None
    media_type: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class _Truncated(Response):
    """Declares the full Content-Length, sends part of the body and never finishes."""

    def __init__(self, reply: Reply, content: bytes) -> None:
        super().__init__(content, reply.status, reply.headers, reply.media_type)
        self.keep = reply.truncate_at or 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {"type": "http.response.body", "body": self.body[: self.keep], "more_body": True}
        )


class ScriptedApi:
    """Answers with queued Replies per (method, path), then with defaults; records requests."""

    def __init__(self, audio_root: Path) -> None:
        self.audio_root = audio_root
        self.queues: dict[tuple[str, str], collections.deque[Reply]] = {}
        self.requests: list[Recorded] = []
        self.app = Starlette(
            routes=[Route("/{rest:path}", self._handle, methods=["GET", "POST", "PUT"])]
        )

    def reset(self) -> None:
        self.queues.clear()
        self.requests.clear()
        for path in self.audio_root.iterdir():
            path.unlink()

    def expect(self, method: str, path: str, *replies: Reply) -> None:
        self.queues.setdefault((method, path), collections.deque()).extend(replies)

    def add_audio(self, name: str, content: bytes) -> str:
        """Store a file the server can serve; returns its server path."""
        (self.audio_root / name).write_bytes(content)
        return AUDIO_DIR + name

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == PREFIX + path]

    async def _record(self, request: Request) -> Recorded:
        body = await request.body()
        record = Recorded(
            request.method,
            request.url.path,
            request.url.query,
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as form:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        data = await value.read()
                        record.files[name] = (value.filename or "", data, value.content_type or "")
                    else:
                        record.form[name] = value
        self.requests.append(record)
        return record

    async def _handle(self, request: Request) -> Response:
        record = await self._record(request)
        path = record.path.removeprefix(PREFIX) if record.path.startswith(PREFIX) else None
        queue = self.queues.get((record.method, path or ""))
        if path is not None and queue:
            return await self._render(queue.popleft())
        if path == "/v1/audio" and record.method == "GET":
            return self._serve_audio(request)
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def _render(self, reply: Reply) -> Response:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply.body, bytes | str) or reply.body is None:
            content = reply.body.encode() if isinstance(reply.body, str) else reply.body or b""
            media_type = reply.media_type or "text/plain"
        else:
            content = json.dumps(reply.body).encode()
            media_type = reply.media_type or "application/json"
        reply.media_type = media_type
        if reply.truncate_at is not None:
            return _Truncated(reply, content)
        return Response(content, reply.status, reply.headers, media_type)

    def _serve_audio(self, request: Request) -> Response:
        server_path = request.query_params.get("path", "")
        if not server_path.startswith(AUDIO_DIR) or "/" in server_path[len(AUDIO_DIR) :]:
            return JSONResponse(
                {"detail": "Access denied: path outside allowed directory"}, status_code=403
            )
        local = self.audio_root / server_path[len(AUDIO_DIR) :]
        if not local.is_file():
            return JSONResponse({"detail": "Audio file not found"}, status_code=404)
        media = {".wav": "audio/wav", ".flac": "audio/flac"}.get(local.suffix, "audio/mpeg")
        return FileResponse(local, media_type=media)


class ServerThread:
    """uvicorn serving an ASGI app on a pre-bound 127.0.0.1 socket in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class RawServer:
    """Accepts connections, reads one request, then closes ("close") or resets ("reset")."""

    def __init__(self, mode: str = "close") -> None:
        self.mode = mode
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scripted_server(audio_root: Path) -> Iterator[tuple[ScriptedApi, ServerThread]]:
    api = ScriptedApi(audio_root)
    server = ServerThread(api.app)
    server.start()
    try:
        yield api, server
    finally:
        server.stop()


# Exact bodies captured from the real ACE-Step 1.5 server (API-TRANSCRIPTS.md, by step).
TRANSCRIPT: dict[str, str] = {
    "health": '{"data":{"status":"ok","service":"ACE-Step API","version":"1.0","models_initialized":false,"llm_initialized":false,"loaded_model":"acestep-v15-turbo","loaded_lm_model":null},"code":200,"error":null,"timestamp":1795476765685,"extra":null}',  # noqa: E501  (step 1)
    "submit_a": '{"data":{"task_id":"b23cbb9a-bce9-4329-b83d-0f2fb06c3bac","status":"queued","queue_position":1},"code":200,"error":null,"timestamp":1795476765701,"extra":null}',  # noqa: E501  (step 2)
    "query_running": '{"data":[{"task_id":"b23cbb9a-bce9-4329-b83d-0f2fb06c3bac","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 0, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"progress\\": 0.2, \\"stage\\": \\"stub diffusion step 1/4\\"}]","status":0,"progress_text":"23:32:45 | INFO | [stub generate_music] diffusion step 1/4"},{"task_id":"f8160f53-1019-4e58-a797-4d6a5560e800","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 0, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"prompt\\": \\"\\", \\"lyrics\\": \\"\\", \\"metas\\": {}, \\"progress\\": 0.0, \\"stage\\": \\"queued\\", \\"error\\": null}]","status":0,"progress_text":"23:32:45 | INFO | [stub generate_music] diffusion step 1/4"},{"task_id":"021e12fb-1f17-4f55-9899-ee9b557cc1ac","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 0, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"prompt\\": \\"\\", \\"lyrics\\": \\"\\", \\"metas\\": {}, \\"progress\\": 0.0, \\"stage\\": \\"queued\\", \\"error\\": null}]","status":0,"progress_text":"23:32:45 | INFO | [stub generate_music] diffusion step 1/4"},{"task_id":"00000000-0000-0000-0000-000000000000","result":"[]","status":0}],"code":200,"error":null,"timestamp":1795476765758,"extra":null}',  # noqa: E501  (step 5)
    "query_done": '{"data":[{"task_id":"b23cbb9a-bce9-4329-b83d-0f2fb06c3bac","result":"[{\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F4136e2ad-020f-0170-6577-265d7b9b85ef.mp3\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"prompt\\": \\"upbeat synthwave, female vocals\\", \\"lyrics\\": \\"[verse]\\\\nneon lights tonight\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": 30.0, \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"upbeat synthwave, female vocals\\", \\"lyrics\\": \\"[verse]\\\\nneon lights tonight\\"}, \\"generation_info\\": \\"**🎵 Total generation time (1 song): 1.32s**\\\\n- 1.32s per song\\\\n- DiT phase (1 song): 1.32s\\", \\"seed_value\\": \\"1852436498\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}]","status":1,"progress_text":"23:32:49 | INFO | [stub generate_music] diffusion step 4/4"},{"task_id":"f8160f53-1019-4e58-a797-4d6a5560e800","result":"[{\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F9347d0a3-fe6a-9045-a0a8-defe0e18aaf9.mp3\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"prompt\\": \\"lofi hip hop piano\\", \\"lyrics\\": \\"[inst]\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": \\"N/A\\", \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"lofi hip hop piano\\", \\"lyrics\\": \\"[inst]\\"}, \\"generation_info\\": \\"**🎵 Total generation time (2 songs): 1.53s**\\\\n- 0.77s per song\\\\n- DiT phase (2 songs): 1.53s\\", \\"seed_value\\": \\"1998814755,2172961275\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}, {\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F1ac0a93c-2da5-3e80-4d93-0ceb2f62a2f1.mp3\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"prompt\\": \\"lofi hip hop piano\\", \\"lyrics\\": \\"[inst]\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": \\"N/A\\", \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"lofi hip hop piano\\", \\"lyrics\\": \\"[inst]\\"}, \\"generation_info\\": \\"**🎵 Total generation time (2 songs): 1.53s**\\\\n- 0.77s per song\\\\n- DiT phase (2 songs): 1.53s\\", \\"seed_value\\": \\"1998814755,2172961275\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}]","status":1,"progress_text":"23:32:49 | INFO | [stub generate_music] diffusion step 4/4"},{"task_id":"021e12fb-1f17-4f55-9899-ee9b557cc1ac","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 2, \\"create_time\\": 1795476765, \\"env\\": \\"development\\", \\"progress\\": 0.0, \\"stage\\": \\"failed\\"}]","status":2,"progress_text":"23:32:49 | INFO | [stub generate_music] diffusion step 4/4"},{"task_id":"00000000-0000-0000-0000-000000000000","result":"[]","status":0}],"code":200,"error":null,"timestamp":1795476769763,"extra":null}',  # noqa: E501  (step 6)
    "audio_missing_auth": '{"detail":"Missing Authorization header"}',
    "invalid_key": '{"detail":"Invalid API key"}',
    "audio_forbidden": '{"detail":"Access denied: path outside allowed directory"}',
    "audio_not_found": '{"detail":"Audio file not found"}',
    "job_missing_auth": '{"detail":"Missing ai_token or Authorization header"}',
    "query_form": '{"data":[{"task_id":"50d83fd2-a014-4120-bc2b-f18550989322","result":"[{\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F7488c191-6b3b-092f-735e-f7827b357f9e.wav\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476770, \\"env\\": \\"development\\", \\"prompt\\": \\"ai token auth\\", \\"lyrics\\": \\"\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": \\"N/A\\", \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"ai token auth\\", \\"lyrics\\": \\"\\"}, \\"generation_info\\": \\"**🎵 Total generation time (1 song): 1.31s**\\\\n- 1.31s per song\\\\n- DiT phase (1 song): 1.31s\\", \\"seed_value\\": \\"2955933862\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}]","status":1,"progress_text":"23:32:53 | INFO | [stub generate_music] done: 2 file(s) in 1.63s"},{"task_id":"110de930-911d-455a-a80e-0d0709375a5c","result":"[{\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F298c9fc1-5172-d052-50e1-e0e49ee3bf48.flac\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476770, \\"env\\": \\"development\\", \\"prompt\\": \\"jazz trio\\", \\"lyrics\\": \\"[inst]\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": 20.0, \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"jazz trio\\", \\"lyrics\\": \\"[inst]\\"}, \\"generation_info\\": \\"**🎵 Total generation time (2 songs): 1.63s**\\\\n- 0.82s per song\\\\n- DiT phase (2 songs): 1.63s\\", \\"seed_value\\": \\"1,2\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}, {\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F79b0d705-3730-1630-fb2a-e082042d610a.flac\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476770, \\"env\\": \\"development\\", \\"prompt\\": \\"jazz trio\\", \\"lyrics\\": \\"[inst]\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": 20.0, \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"jazz trio\\", \\"lyrics\\": \\"[inst]\\"}, \\"generation_info\\": \\"**🎵 Total generation time (2 songs): 1.63s**\\\\n- 0.82s per song\\\\n- DiT phase (2 songs): 1.63s\\", \\"seed_value\\": \\"1,2\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}]","status":1,"progress_text":"23:32:53 | INFO | [stub generate_music] done: 2 file(s) in 1.63s"},{"task_id":"93d44bc2-ff84-4856-9fff-890f6559502e","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 2, \\"create_time\\": 1795476770, \\"env\\": \\"development\\", \\"progress\\": 0.0, \\"stage\\": \\"failed\\"}]","status":2,"progress_text":"23:32:53 | INFO | [stub generate_music] done: 2 file(s) in 1.63s"}],"code":200,"error":null,"timestamp":1795476774018,"extra":null}',  # noqa: E501  (step 21)
    "stats": '{"data":{"jobs":{"total":6,"queued":0,"running":0,"succeeded":4,"failed":2},"queue_size":0,"queue_maxsize":200,"avg_job_seconds":1.1356118122736614},"code":200,"error":null,"timestamp":1795476774102,"extra":null}',  # noqa: E501  (step 22)
    "malformed_json": '{"detail":"Malformed JSON payload"}',
    "absolute_path": '{"detail":"absolute audio file paths are not allowed"}',
    "query_empty": '{"data":[],"code":200,"error":null,"timestamp":1795476774288,"extra":null}',
    "query_after_restart": '{"data":[{"task_id":"c1921a7b-ed3b-4c27-9638-619567fc1733","result":"[{\\"file\\": \\"/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F81ec2341-7d9c-6bfc-7c6f-7d62a0d2cddb.mp3\\", \\"wave\\": \\"\\", \\"status\\": 1, \\"create_time\\": 1795476783, \\"env\\": \\"development\\", \\"prompt\\": \\"finished before restart\\", \\"lyrics\\": \\"\\", \\"metas\\": {\\"bpm\\": \\"N/A\\", \\"duration\\": \\"N/A\\", \\"genres\\": \\"N/A\\", \\"keyscale\\": \\"N/A\\", \\"timesignature\\": \\"N/A\\", \\"prompt\\": \\"finished before restart\\", \\"lyrics\\": \\"\\"}, \\"generation_info\\": \\"**🎵 Total generation time (1 song): 6.29s**\\\\n- 6.29s per song\\\\n- DiT phase (1 song): 6.29s\\", \\"seed_value\\": \\"3773760515\\", \\"lm_model\\": \\"acestep-5Hz-lm-0.6B\\", \\"dit_model\\": \\"acestep-v15-turbo\\", \\"progress\\": 1.0, \\"stage\\": \\"succeeded\\"}]","status":1,"progress_text":"INFO:     Uvicorn running on http://127.0.0.1:8011 (Press CTRL+C to quit)"},{"task_id":"e1a653e7-724e-4df6-9a68-58c856f8a8d1","result":"[{\\"file\\": \\"\\", \\"wave\\": \\"\\", \\"status\\": 0, \\"create_time\\": 1795476790, \\"env\\": \\"development\\", \\"progress\\": 0.32, \\"stage\\": \\"stub diffusion step 8/24\\"}]","status":0,"progress_text":"INFO:     Uvicorn running on http://127.0.0.1:8011 (Press CTRL+C to quit)"},{"task_id":"f85d76bd-c5e4-4535-9b5d-94ee8c745a19","result":"[]","status":0}],"code":200,"error":null,"timestamp":1795476796229,"extra":null}',  # noqa: E501  (step 34)
}
TASK_A = "b23cbb9a-bce9-4329-b83d-0f2fb06c3bac"
TASK_B = "f8160f53-1019-4e58-a797-4d6a5560e800"
TASK_C = "021e12fb-1f17-4f55-9899-ee9b557cc1ac"
TASK_UNKNOWN = "00000000-0000-0000-0000-000000000000"
