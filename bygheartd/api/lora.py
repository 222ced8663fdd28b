"""A server-level LoRA on an ACE-Step 1.5 server: what its `/v1/lora/status` says, and
what a `/v1/lora/load` refusal means.

The server's LoRA state is global to its slot-1 model and changes every later job there
(ACESTEP-TASKS.md §2.6), so bygheartd never switches it per job: a LoRA is configured per
server (`[[api.servers]] lora_path`, a path *on that server*) and loaded once. The facts
this module relies on, from the server's `lora_routes.py` and the captures (R1-4, R1-12,
R1-15/16):

- `GET /v1/lora/status` and `POST /v1/lora/load` answer HTTP 500 `"Model not initialized"`
  until the server has loaded its model (a server started with ACESTEP_NO_INIT loads it on
  its first job): not an error of the LoRA, just "not yet".
- `POST /v1/lora/load {"lora_path": ...}`: the adapter is named after the path's last
  component; a refusal is HTTP 400 `{"detail": "❌ ..."}` (path not found, not an adapter,
  the name already in use, ...), an exception HTTP 500 `"Failed to load LoRA: ..."`.
- The status lists the loaded adapters by name (`adapters`); a restarted server lists none.
  There is no route that lists adapters on disk: the path is known only from the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bygheartd.api.results import finite_number

__all__ = [
    "LoraStatus",
    "adapter_name",
    "already_loaded",
    "not_initialized",
    "parse_lora_status",
]

NOT_INITIALIZED = "Model not initialized"
_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass(frozen=True)
class LoraStatus:
    """What a server's `/v1/lora/status` says (read loosely: a missing flag is false)."""

    loaded: bool
    enabled: bool
    adapters: tuple[str, ...]
    active: str | None
    scale: float | None

    def has(self, lora_path: str) -> bool:
        """Whether the adapter loaded from `lora_path` is among the server's adapters."""
        name = adapter_name(lora_path)
        stem = _stem(name)
        return any(a == name or _stem(a) == stem for a in self.adapters)

    def as_record(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "enabled": self.enabled,
            "adapters": list(self.adapters),
            "active": self.active,
            "scale": self.scale,
        }


def adapter_name(lora_path: str) -> str:
    """The name the server gives an adapter loaded without one: the path's last component
    (a path on the server, which may use either separator)."""
    parts = [p for p in re.split(r"[\\/]+", lora_path.strip()) if p]
    return parts[-1] if parts else lora_path.strip()


def _stem(name: str) -> str:
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_lora_status(data: Mapping[str, Any]) -> LoraStatus:
    """The `data` of a `/v1/lora/status` reply (captured R1-12)."""
    adapters = data.get("adapters")
    names = tuple(
        a.strip() for a in (adapters if isinstance(adapters, list) else ()) if isinstance(a, str)
    )
    scale = data.get("lora_scale")
    active = data.get("active_adapter")
    return LoraStatus(
        loaded=data.get("lora_loaded") is True or bool(names),
        enabled=data.get("use_lora") is True,
        adapters=tuple(n for n in names if n),
        active=active if isinstance(active, str) and active else None,
        scale=finite_number(scale),
    )


def not_initialized(status: int | None, message: str) -> bool:
    """Whether a LoRA route's refusal means only "the server has not loaded its model yet"
    (HTTP 500 `Model not initialized`, or the handler's own `❌ Model not initialized`)."""
    return status in (400, 500) and NOT_INITIALIZED.lower() in message.lower()


def already_loaded(message: str) -> bool:
    """Whether a load refusal says the adapter is there already (loaded meanwhile)."""
    return "already in use" in message.lower()
