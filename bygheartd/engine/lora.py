"""Each pool server's configured LoRA (`[[api.servers]] lora_path`), loaded once.

A LoRA on ACE-Step is server-global (it changes every later job on slot 1), so it is a
property of the server, not of a job: the pool loads it when it first finds the server
healthy, and again whenever the server's `/v1/lora/status` no longer lists it (a restart
forgets it). It reads that status with every health check (as often as the server's stats),
never per job, and never loads an adapter the server already lists.

What a check concludes:
- loaded (or loaded now): the server takes jobs;
- the server has not loaded its model yet (started with ACESTEP_NO_INIT: the model loads on
  its first job, and until then the LoRA routes answer "Model not initialized"): it takes
  one job (the pool's `choose`), which runs without it, and the LoRA is loaded when that job
  is done;
- the server refuses the path (not found, not an adapter) or has no LoRA routes: it gets no
  new jobs, with the server's words and the fix as its reason, until a later check loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bygheartd.api.client import BygheartClient
from bygheartd.api.errors import ApiError
from bygheartd.api.lora import adapter_name, already_loaded, not_initialized, parse_lora_status
from bygheartd.safetext import visible

log = logging.getLogger(__name__)

__all__ = ["PENDING", "LoraCheck", "ensure_lora"]

PENDING = (
    "not loaded yet: the server loads its model on its first job (ACESTEP_NO_INIT); it gets "
    "that one song, which runs without the LoRA, and the LoRA is loaded when it is done"
)


@dataclass(frozen=True)
class LoraCheck:
    """What one check found: `loaded` (None: not known yet), a note for `status`, and the
    reason the server must get no new jobs (None: it may)."""

    loaded: bool | None
    note: str | None = None
    problem: str | None = None


def _fix(url: str, lora_path: str, said: str) -> str:
    return (
        f"its LoRA {lora_path!r} could not be loaded ({said}): fix lora_path in the "
        f"[[api.servers]] entry of {url} (a path on that server: a PEFT directory with "
        "adapter_config.json, or a LoKr .safetensors file), or remove it"
    )


async def ensure_lora(
    client: BygheartClient, url: str, lora_path: str, *, was_loaded: bool | None
) -> LoraCheck:
    """Make sure the server lists its configured LoRA, loading it when it does not."""
    try:
        data = await client.lora_status()
    except ApiError as exc:
        if not_initialized(exc.status, exc.message):
            return LoraCheck(loaded=None, note=PENDING)
        return LoraCheck(
            loaded=False, problem=f"its LoRA state cannot be read: {visible(str(exc))}"
        )
    if data is None:
        return LoraCheck(
            loaded=False,
            problem=(
                f"it has no /v1/lora routes (not an ACE-Step 1.5 server, or a wrapper that "
                f"hides them), so its LoRA {lora_path!r} cannot be loaded: remove lora_path "
                f"from the [[api.servers]] entry of {url}"
            ),
        )
    if parse_lora_status(data).has(lora_path):
        return LoraCheck(loaded=True)
    if was_loaded:
        log.warning(
            "server %s no longer lists its LoRA %s (restarted?): loading it again",
            url,
            visible(adapter_name(lora_path)),
        )
    try:
        await client.load_lora(lora_path)
    except ApiError as exc:
        said = visible(exc.message.split(": ", 2)[-1] if exc.status else exc.message)
        if not_initialized(exc.status, exc.message):
            return LoraCheck(loaded=None, note=PENDING)
        if already_loaded(exc.message):
            return LoraCheck(loaded=True)
        if exc.status != 400:  # not a refusal of the path: tried again at the next probe
            return LoraCheck(loaded=False, problem=f"its LoRA {lora_path!r} did not load: {said}")
        return LoraCheck(loaded=False, problem=_fix(url, lora_path, said))
    log.info("server %s: LoRA %s loaded from %s", url, visible(adapter_name(lora_path)), lora_path)
    return LoraCheck(loaded=True)
