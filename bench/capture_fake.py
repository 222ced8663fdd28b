"""A stand-in ACE-Step 1.5 API server whose replies are shaped like the captures of the
real one (/work/shared/API-TRANSCRIPTS.md), written apart from bygheartd's own simulator so
that the poll planner is measured against what a real server says, not what ours says.

What it copies from the captures, because the planner reads it:

- `/release_task`: `{"task_id", "status": "queued", "queue_position"}`, where
  `queue_position` counts the tasks still waiting *including this one* (a task submitted to
  an idle server gets 1);
- running entries: `progress` is written by the model's progress callback, not computed at
  query time. The first write is `0.01`, stage `"running"`; then each diffusion step k of N
  writes `k / (N + 1)` with stage `"stub diffusion step k/N"` when the step *starts* (the
  capture saw step 1/4 at 0.2 within 60 ms of the submit), at the stub's pace of 4 steps a
  second (1 s: 4 steps; 6 s: 24 steps). Between writes a query sees the last value, and the
  files are written after the last step (about 0.3 s for the stub), so progress never says
  how much is left of that tail. It is not rounded: `float(k / (N + 1))`;
- queued entries (`progress 0.0`, `stage "queued"`, `prompt`, `lyrics`, `metas {}`,
  `error null`), unknown ids (`"[]"`, no `progress_text`), the global `progress_text`;
- `/v1/stats` with `avg_job_seconds` (the mean of the finished jobs' run times);
- FastAPI's compact JSON outside, Python's `json.dumps` defaults inside `result`.

It serves WAV files (stdlib `wave`) whatever format was asked for, so runs ask for `wav`.
It runs a real HTTP server (stdlib `http.server`) on 127.0.0.1 and an ephemeral port, on a
thread. Generation times are drawn per task from `uniform(low, high)` with a seeded RNG and
can be changed while it runs (`set_generation`), for the scenario where they jump.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
import tempfile
import threading
import time
import uuid
import wave
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

ENV = "development"
DIT_MODEL = "acestep-v15-turbo"
LM_MODEL = "acestep-5Hz-lm-0.6B"
STEPS_PER_SECOND = 4.0  # the captured stub: STUB_GEN_SECONDS=1 gave 4 steps, 6 gave 24
WRITE_SECONDS = 0.3  # the captured stub: 1.32 s reported for STUB_GEN_SECONDS=1
PREPARE_SECONDS = 0.05  # between the 0.01 "running" write and step 1


@dataclass
class FakeTask:
    task_id: str
    created: float  # epoch seconds
    start: float  # when a worker takes it
    diffusion: float  # seconds of diffusion steps
    steps: int
    body: dict[str, Any]
    fate: str = "succeed"
    files: list[Path] = field(default_factory=list)
    first_download_at: float | None = None

    @property
    def finished_at(self) -> float:
        return self.start + PREPARE_SECONDS + self.diffusion + WRITE_SECONDS

    @property
    def run_seconds(self) -> float:
        return self.finished_at - self.start

    def state(self, now: float) -> tuple[str, float, str]:
        """(state, progress, stage) as the server's cache holds them at `now`."""
        if now < self.start:
            return "queued", 0.0, "queued"
        if now >= self.finished_at:
            return ("failed", 0.0, "failed") if self.fate == "fail" else ("succeeded", 1.0, "")
        into = now - self.start - PREPARE_SECONDS
        if into < 0:
            return "running", 0.01, "running"
        step = min(self.steps, math.floor(into / (self.diffusion / self.steps)) + 1)
        return "running", float(step / (self.steps + 1)), f"stub diffusion step {step}/{self.steps}"


class CaptureFake:
    """The fake server's state; `serve()` runs it over HTTP on 127.0.0.1."""

    def __init__(
        self,
        *,
        low: float,
        high: float,
        key: str,
        workers: int | None = None,
        seed: int = 7,
        steps: int | None = None,
    ) -> None:
        self.key = key
        self.workers = workers
        self.steps = steps  # None: the stub's pace (STEPS_PER_SECOND)
        self.rng = random.Random(seed)
        self.low, self.high = low, high
        self.tasks: dict[str, FakeTask] = {}
        self.requests: Counter[str] = Counter()
        self.ids_per_poll: list[int] = []
        self.poll_times: list[float] = []
        self._slots: list[float] = []
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="bygheartd-capture-fake-"))
        self.audio_dir = self._dir / "api_audio"
        self.audio_dir.mkdir()
        self.base_url = ""

    # -- what a run reads and steers ---------------------------------------------------

    def set_generation(self, low: float, high: float) -> None:
        """Tasks submitted from now on run `uniform(low, high)` seconds of diffusion."""
        with self._lock:
            self.low, self.high = low, high

    def reset(self) -> None:
        with self._lock:
            self.tasks.clear()
            self.requests.clear()
            self.ids_per_poll.clear()
            self.poll_times.clear()
            self._slots.clear()

    def lags(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[float]:
        """Server has the audio -> the client's first request for it, per task (but the
        `exclude`d ones)."""
        with self._lock:
            return [
                t.first_download_at - t.finished_at
                for t in self.tasks.values()
                if t.first_download_at is not None and t.task_id not in exclude
            ]

    def finishes(self) -> list[float]:
        with self._lock:
            return sorted(t.finished_at for t in self.tasks.values())

    # -- the server's behaviour -------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> tuple[str, int]:
        now = time.time()
        with self._lock:
            seconds = self.rng.uniform(self.low, self.high)
            steps = self.steps or max(1, round(seconds * STEPS_PER_SECOND))
            start = now
            waiting = sum(1 for t in self.tasks.values() if t.start > now)
            if self.workers is not None:
                busy = sorted(s for s in self._slots if s > now)
                if len(busy) >= self.workers:
                    start = busy[len(busy) - self.workers]
                self._slots = busy
            task = FakeTask(str(uuid.uuid4()), now, start, seconds, steps, body)
            if "FAIL" in str(body.get("prompt", "")):
                task.fate = "fail"
            if self.workers is not None:
                self._slots.append(task.finished_at)
            self.tasks[task.task_id] = task
            return task.task_id, waiting + 1

    def _files(self, task: FakeTask) -> list[Path]:
        if not task.files:
            batch = int(task.body.get("batch_size") or 2)
            for n in range(max(1, min(8, batch))):
                name = uuid.UUID(hashlib.sha256(f"{task.task_id}:{n}".encode()).hexdigest()[:32])
                path = self.audio_dir / f"{name}.wav"
                write_tone(path)
                task.files.append(path)
        return task.files

    def log_line(self, now: float) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(now))
        running = [t for t in self.tasks.values() if t.start <= now < t.finished_at]
        if running:
            latest = max(running, key=lambda t: t.start)
            _, _, stage = latest.state(now)
            return f"{stamp} | INFO | [stub generate_music] {stage.removeprefix('stub ')}"
        return f"{stamp} | INFO | [stub generate_music] done"

    def entry(self, task_id: str, now: float, progress_text: str) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return {"task_id": task_id, "result": "[]", "status": 0}
        state, progress, stage = task.state(now)
        base: dict[str, Any] = {
            "file": "",
            "wave": "",
            "status": 0,
            "create_time": int(task.created),
            "env": ENV,
        }
        if state == "queued":
            elements = [
                base
                | {
                    "prompt": "",
                    "lyrics": "",
                    "metas": {},
                    "progress": 0.0,
                    "stage": "queued",
                    "error": None,
                }
            ]
            status = 0
        elif state == "running":
            elements = [base | {"progress": progress, "stage": stage}]
            status = 0
        elif state == "failed":
            elements = [base | {"status": 2, "progress": 0.0, "stage": "failed"}]
            status = 2
        else:
            elements = self._success(task)
            status = 1
        return {
            "task_id": task_id,
            "result": json.dumps(elements, ensure_ascii=False),
            "status": status,
            "progress_text": progress_text,
        }

    def _success(self, task: FakeTask) -> list[dict[str, Any]]:
        files = self._files(task)
        body = task.body
        duration = body.get("audio_duration")
        metas = {
            "bpm": body.get("bpm") or "N/A",
            "duration": float(duration) if isinstance(duration, int | float) else "N/A",
            "genres": "N/A",
            "keyscale": body.get("key_scale") or "N/A",
            "timesignature": body.get("time_signature") or "N/A",
            "prompt": str(body.get("prompt") or ""),
            "lyrics": str(body.get("lyrics") or ""),
        }
        seconds = task.run_seconds
        count = len(files)
        songs = f"{count} song{'s' if count != 1 else ''}"
        info = (
            f"**🎵 Total generation time ({songs}): {seconds:.2f}s**\n"
            f"- {seconds / count:.2f}s per song\n- DiT phase ({songs}): {seconds:.2f}s"
        )
        seeds = ",".join(str(self.rng.getrandbits(32)) for _ in files)
        return [
            {
                "file": "/v1/audio?path=" + quote(str(path), safe=""),
                "wave": "",
                "status": 1,
                "create_time": int(task.created),
                "env": ENV,
                "prompt": metas["prompt"],
                "lyrics": metas["lyrics"],
                "metas": metas,
                "generation_info": info,
                "seed_value": seeds,
                "lm_model": LM_MODEL,
                "dit_model": DIT_MODEL,
                "progress": 1.0,
                "stage": "succeeded",
            }
            for path in files
        ]

    def stats(self, now: float) -> dict[str, Any]:
        done = [t for t in self.tasks.values() if t.finished_at <= now]
        queued = sum(1 for t in self.tasks.values() if t.start > now)
        running = sum(1 for t in self.tasks.values() if t.start <= now < t.finished_at)
        failed = sum(1 for t in done if t.fate == "fail")
        average = sum(t.run_seconds for t in done) / len(done) if done else 0.0
        return {
            "jobs": {
                "total": len(self.tasks),
                "queued": queued,
                "running": running,
                "succeeded": len(done) - failed,
                "failed": failed,
            },
            "queue_size": queued,
            "queue_maxsize": 200,
            "avg_job_seconds": average,
        }

    def audio(self, path: Path) -> Path | None:
        now = time.time()
        with self._lock:
            for task in self.tasks.values():
                if path in task.files:
                    if task.first_download_at is None:
                        task.first_download_at = now
                    return path
        return None

    @contextmanager
    def serve(self) -> Iterator[CaptureFake]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def write_tone(path: Path, seconds: float = 1.0, rate: int = 22050) -> None:
    """A short 440 Hz tone, as the captured stand-in model writes."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


def envelope(data: Any) -> bytes:
    """FastAPI's JSONResponse: compact separators, raw UTF-8."""
    body = {
        "data": data,
        "code": 200,
        "error": None,
        "timestamp": int(time.time() * 1000),
        "extra": None,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _detail(text: str) -> bytes:
    return json.dumps({"detail": text}, separators=(",", ":")).encode()


def _handler(fake: CaptureFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "uvicorn"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet, as a benchmark needs

        def version_string(self) -> str:
            return "uvicorn"

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "application/json",
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response_only(status)
            self.send_header("date", formatdate(usegmt=True))
            self.send_header("server", "uvicorn")
            self.send_header("content-length", str(len(body)))
            self.send_header("content-type", content_type)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.send_header("vary", "Origin")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self, body: dict[str, Any] | None = None) -> bool:
            token = (body or {}).get("ai_token")
            if token is not None:
                if token != fake.key:
                    self._send(401, _detail("Invalid ai_token"))
                    return False
                return True
            header = self.headers.get("Authorization")
            if header is None:
                missing = "Missing ai_token or Authorization header"
                self._send(
                    401, _detail(missing if body is not None else "Missing Authorization header")
                )
                return False
            if header.removeprefix("Bearer ") != fake.key:
                self._send(401, _detail("Invalid API key"))
                return False
            return True

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("application/x-www-form-urlencoded"):
                form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                if isinstance(form.get("task_id_list"), str):
                    form["task_id_list"] = json.loads(form["task_id_list"])
                return form
            try:
                value = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, _detail("Malformed JSON payload"))
                return None
            if not isinstance(value, dict):
                self._send(400, _detail("JSON payload must be an object"))
                return None
            return value

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            fake.requests[path] += 1
            body = self._body()
            if body is None or not self._authorized(body):
                return
            if path == "/release_task":
                task_id, position = fake.submit(body)
                reply = {"task_id": task_id, "status": "queued", "queue_position": position}
                self._send(200, envelope(reply))
            elif path == "/query_result":
                ids = body.get("task_id_list") or []
                ids = json.loads(ids) if isinstance(ids, str) else ids
                now = time.time()
                with fake._lock:
                    fake.ids_per_poll.append(len(ids))
                    fake.poll_times.append(now)
                    text = fake.log_line(now)
                    data = [fake.entry(str(i), now, text) for i in ids]
                self._send(200, envelope(data))
            else:
                self._send(404, _detail("Not Found"))

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests[parts.path] += 1
            if parts.path == "/health":
                ready = bool(fake.tasks)
                self._send(
                    200,
                    envelope(
                        {
                            "status": "ok",
                            "service": "ACE-Step API",
                            "version": "1.0",
                            "models_initialized": ready,
                            "llm_initialized": ready,
                            "loaded_model": DIT_MODEL,
                            "loaded_lm_model": None,
                        }
                    ),
                )
                return
            if not self._authorized():
                return
            if parts.path == "/v1/stats":
                with fake._lock:
                    stats = fake.stats(time.time())
                self._send(200, envelope(stats))
            elif parts.path == "/v1/audio":
                wanted = unquote(parse_qs(parts.query).get("path", [""])[-1])
                self._audio(Path(wanted))
            else:
                self._send(404, _detail("Not Found"))

        def _audio(self, path: Path) -> None:
            if not path.is_relative_to(fake.audio_dir):
                self._send(403, _detail("Access denied: path outside allowed directory"))
                return
            found = fake.audio(path)
            if found is None or not found.exists():
                self._send(404, _detail("Audio file not found"))
                return
            data = found.read_bytes()
            headers = {
                "accept-ranges": "bytes",
                "last-modified": formatdate(found.stat().st_mtime, usegmt=True),
                "etag": f'"{hashlib.md5(data).hexdigest()}"',
            }
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                start = int(first or 0)
                end = min(len(data) - 1, int(last) if last else len(data) - 1)
                headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, data[start : end + 1], "audio/wav", headers)
                return
            self._send(200, data, "audio/wav", headers)

    return Handler
