"""Issue 29 item 3: the engine against a server that answers as the captured real one does
(`bench/capture_fake.py`: progress written per step and read stale, `queue_position`
counting the task itself, `/v1/stats`), not as our own simulator does. Requests are
counted; nothing here is timed beyond generous bounds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _jobs import song
from conftest import TEST_KEY, MakeConfig

from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent


def _load_fake() -> ModuleType:
    """bench/ is no package: the fake is loaded from its file (as bench/engine.py runs it)."""
    spec = importlib.util.spec_from_file_location(
        "capture_fake", REPO / "bench" / "capture_fake.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("capture_fake", module)
    spec.loader.exec_module(sys.modules["capture_fake"])
    return sys.modules["capture_fake"]


capture_fake = _load_fake()


@pytest.fixture
def fake() -> Iterator[Any]:
    server = capture_fake.CaptureFake(low=0.6, high=1.4, key=TEST_KEY, seed=3)
    with server.serve():
        yield server


def test_the_fake_answers_with_the_captured_shapes(fake: Any) -> None:
    """Key sets and order as in API-TRANSCRIPTS.md steps 2, 5 and 22 (its own client)."""
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=10) as client:
        first = client.post("/release_task", json={"prompt": "a", "batch_size": 1}).json()
        second = client.post("/release_task", json={"prompt": "b", "batch_size": 1}).json()
        assert list(first) == ["data", "code", "error", "timestamp", "extra"]
        assert list(first["data"]) == ["task_id", "status", "queue_position"]
        assert first["data"]["queue_position"] == 1  # it counts itself: idle server, 1
        ids = [first["data"]["task_id"], second["data"]["task_id"], "unknown"]
        reply = client.post("/query_result", json={"task_id_list": ids})
        assert reply.headers["server"] == "uvicorn" and reply.headers["vary"] == "Origin"
        entries = reply.json()["data"]
        assert list(entries[0]) == ["task_id", "result", "status", "progress_text"]
        running = json.loads(entries[0]["result"])[0]
        keys = ["file", "wave", "status", "create_time", "env", "progress", "stage"]
        assert list(running) == keys  # a running entry: none of the queued one's keys
        assert 0 < running["progress"] < 1 and running["status"] == 0
        assert entries[2] == {"task_id": "unknown", "result": "[]", "status": 0}
        stats = client.get("/v1/stats").json()["data"]
        assert list(stats) == ["jobs", "queue_size", "queue_maxsize", "avg_job_seconds"]
        assert stats["jobs"]["total"] == 2
        assert client.get("/v1/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401


async def test_the_engine_delivers_every_song_from_the_capture_shaped_fake(
    fake: Any, make_config: MakeConfig, tmp_path: Path
) -> None:
    """Six songs of 0.6 to 1.4 s through the engine, four in flight: each submitted once,
    each take fetched once, the polls batched, and generation times learned."""
    config = make_config(
        None,
        api={"base_url": fake.base_url, "backend": "acestep"},
        queue={"max_in_flight": 4, "poll_min_seconds": 0.3, "poll_max_seconds": 2.0},
    )
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        jobs = [
            await runtime.service.submit_file(
                song(
                    tmp_path,
                    f"song{n}.txt",
                    title=f"Song {n}",
                    model="acestep-v15-turbo",
                    audio_format="wav",
                )
            )
            for n in range(6)
        ]
        done = [await runtime.service.wait(j.id, timeout=60) for j in jobs]
        engine = runtime.engine
        assert engine is not None
        learned = len(engine.poller.predictor.history)
    assert [j.status for j in done] == [JobStatus.DONE] * 6
    assert fake.requests["/release_task"] == 6
    assert fake.requests["/v1/audio"] == 6  # one take each, fetched once
    assert len(fake.lags()) == 6  # the fake saw every file asked for after it was ready
    assert 1 <= fake.requests["/query_result"] <= 6 * 8  # generous: about 1 to 2 a song
    assert max(fake.ids_per_poll) >= 2  # one request asks for several tasks
    assert learned >= 1  # generation times learned from them (a changed server restarts it)
