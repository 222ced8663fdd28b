"""The LoRA routes of ACE-Step 1.5 (`/v1/lora/load`, `/unload`, `/status`), as the genuine
server answers them (ACESTEP-TASKS.md §2.6; its `lora_routes.py`; captures R1-4, R1-12,
R1-15..19 in API-TRANSCRIPTS-TASKS.md).

- ACE-Step mode only (the hosted wrapper answers 404). Header key only (401
  `Missing Authorization header` without one, R1-18).
- Until the model is loaded (the first job, as the simulator loads lazily) every route
  answers HTTP 500 `{"detail": "Model not initialized"}` (R1-4).
- load: `lora_path` is required (422, R1-17); the path is one on *this* machine, checked as
  the server checks it: missing → 400 `❌ LoRA path not found: <path>` (R1-15); a directory
  without `adapter_config.json` or `lokr_weights.safetensors` → 400 `❌ Invalid adapter ...`
  (R1-16). The adapter is named after the path's last component (or `adapter_name`); a
  name already loaded is refused with 400.
- unload: `⚠️ No LoRA adapter loaded.` is a 200 (R1-19).
- status: the captured shape (R1-12). A restart (`/_sim/restart`) forgets every adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .auth import Caller, authenticate
from .state import Simulator

NOT_INITIALIZED = "Model not initialized"
LOKR_FILE = "lokr_weights.safetensors"


def _detail(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _envelope(data: Any) -> JSONResponse:
    stamp = int(time.time() * 1000)
    return JSONResponse(
        {"data": data, "code": 200, "error": None, "timestamp": stamp, "extra": None}
    )


def _ready(request: Request) -> Simulator | Response:
    sim: Simulator = request.app.state.sim
    if sim.settings.backend != "acestep":  # the hosted wrapper exposes no LoRA routes
        return _detail(404, "Not Found")
    caller = authenticate(sim.settings, request.headers, header_only=True)
    if not isinstance(caller, Caller):
        return caller
    return sim


def _adapter(path: Path) -> tuple[str, str] | str:
    """(kind, the file or folder loaded) for a path the server accepts, else its refusal."""
    if not path.exists():
        return f"❌ LoRA path not found: {path}"
    if path.is_file() and path.suffix == ".safetensors":
        return "lokr", str(path)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return "lora", str(path)
    if path.is_dir() and (path / LOKR_FILE).is_file():
        return "lokr", str(path / LOKR_FILE)
    return (
        "❌ Invalid adapter: expected PEFT LoRA directory containing adapter_config.json or "
        f"LoKr artifact {LOKR_FILE} in {path}"
    )


async def lora_load(request: Request) -> Response:
    sim = _ready(request)
    if isinstance(sim, Response):
        return sim
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        body = None
    lora_path = body.get("lora_path") if isinstance(body, dict) else None
    if not isinstance(lora_path, str):
        missing = {"type": "missing", "loc": ["body", "lora_path"], "msg": "Field required"}
        return _detail(422, [missing | {"input": body}])
    if not sim.models_initialized:
        return _detail(500, NOT_INITIALIZED)
    sim.lora_loads += 1
    found = _adapter(Path(lora_path))
    if isinstance(found, str):
        return _detail(400, found)
    kind, loaded = found
    given = body.get("adapter_name") if isinstance(body, dict) else None
    name = given.strip() if isinstance(given, str) and given.strip() else Path(lora_path).name
    if name in sim.lora_adapters:
        return _detail(400, f"❌ Adapter name already in use: {name}")
    sim.lora_adapters[name] = (lora_path, kind)
    sim.lora_loaded_after.append(sim.stats.submits)
    message = (
        f"✅ LoKr loaded from {loaded}"
        if kind == "lokr"
        else (f"✅ LoRA '{name}' loaded from {lora_path}")
    )
    data: dict[str, Any] = {"message": message, "lora_path": lora_path}
    if isinstance(given, str) and given.strip():
        data["adapter_name"] = name
    return _envelope(data)


async def lora_unload(request: Request) -> Response:
    sim = _ready(request)
    if isinstance(sim, Response):
        return sim
    if not sim.models_initialized:
        return _detail(500, NOT_INITIALIZED)
    if not sim.lora_adapters:
        return _envelope({"message": "⚠️ No LoRA adapter loaded."})
    sim.lora_adapters.clear()
    return _envelope({"message": "✅ LoRA unloaded, using base model"})


async def lora_status(request: Request) -> Response:
    sim = _ready(request)
    if isinstance(sim, Response):
        return sim
    if not sim.models_initialized:
        return _detail(500, NOT_INITIALIZED)
    names = list(sim.lora_adapters)
    kinds = {kind for _, kind in sim.lora_adapters.values()}
    return _envelope(
        {
            "lora_loaded": bool(names),
            "use_lora": bool(names),
            "lora_scale": 1.0,
            "adapter_type": kinds.pop() if len(kinds) == 1 else None,
            "scales": {name: 1.0 for name in names},
            "active_adapter": names[-1] if names else None,
            "adapters": names,
            "synthetic_default_mode": False,
        }
    )


def lora_routes() -> list[BaseRoute]:
    return [
        Route("/v1/lora/load", lora_load, methods=["POST"]),
        Route("/v1/lora/unload", lora_unload, methods=["POST"]),
        Route("/v1/lora/status", lora_status, methods=["GET"]),
    ]
