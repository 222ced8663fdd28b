"""A server's model inventory (`GET /v1/model_inventory`) read into what routing needs.

ACE-Step runs a task on the slot its `model` names only when that model is loaded, and
otherwise silently on slot 1; it never refuses a turbo model for stems, layers or
accompaniment (ACESTEP-TASKS.md §1.7, §2.2-2.3). So the client decides itself: a task that
needs a base-family model goes only to a server that has one loaded (or one that has
loaded nothing yet, `Inventory.pending`: its slots are unknown until its first job), and a
result whose `dit_model` is not the model asked for carries a warning. The inventory's
`supported_task_types` lists extract, lego and complete for SFT models too (the server
derives it from `is_turbo`), while the docs and UI say base only: the model's family
decides here, not that list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bygheartd.jobs import Take

__all__ = ["Inventory", "ModelSlot", "parse_inventory", "ran_elsewhere"]


@dataclass(frozen=True)
class ModelSlot:
    """One DiT model the server knows: on disk, or loaded in a slot."""

    name: str
    loaded: bool
    default: bool
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    models: tuple[ModelSlot, ...]
    default_model: str | None
    llm_initialized: bool | None
    lm_models: tuple[str, ...] = ()

    def loaded(self) -> list[str]:
        """The loaded models, slot 1's first."""
        found = [m for m in self.models if m.loaded]
        found.sort(key=lambda m: not m.default)
        return [m.name for m in found]

    def has_loaded(self, model: str) -> bool:
        return model in self.loaded()

    def pending(self) -> bool:
        """Nothing loaded and the LM not initialised: an ACE-Step server started with
        ACESTEP_NO_INIT before its first job, which loads every configured slot (capture
        R1-3, then R1-8). Which models its slots hold is not known until then: the list is
        what is on disk, not what is configured, so "none loaded" is not "no base model"."""
        return not self.loaded() and self.llm_initialized is not True

    def as_record(self) -> dict[str, Any]:
        return {
            "default_model": self.default_model,
            "llm_initialized": self.llm_initialized,
            "initialized": not self.pending(),
            "models": [
                {"name": m.name, "loaded": m.loaded, "default": m.default, "tasks": list(m.tasks)}
                for m in self.models
            ],
            "lm_models": list(self.lm_models),
        }


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_inventory(data: Mapping[str, Any]) -> Inventory:
    """The `data` of the reply, read loosely: entries that are not objects, or have no name,
    are skipped; a missing flag is false."""
    models: list[ModelSlot] = []
    raw = data.get("models")
    for entry in raw if isinstance(raw, list) else ():
        if not isinstance(entry, Mapping) or (name := _text(entry.get("name"))) is None:
            continue
        tasks = entry.get("supported_task_types")
        models.append(
            ModelSlot(
                name=name,
                loaded=entry.get("is_loaded") is True,
                default=entry.get("is_default") is True,
                tasks=tuple(str(t) for t in tasks) if isinstance(tasks, list) else (),
            )
        )
    lms = data.get("lm_models")
    lm_names = [
        n
        for e in (lms if isinstance(lms, list) else ())
        if isinstance(e, Mapping) and (n := _text(e.get("name")))
    ]
    llm = data.get("llm_initialized")
    return Inventory(
        models=tuple(models),
        default_model=_text(data.get("default_model")),
        llm_initialized=llm if isinstance(llm, bool) else None,
        lm_models=tuple(lm_names),
    )


def ran_elsewhere(asked: str | None, takes: Iterable[Take]) -> str | None:
    """The warning for a result made by another model than the one asked for (the server
    ran slot 1 because the model named was not loaded), or None."""
    if not asked:
        return None
    ran = {t.dit_model for t in takes if t.dit_model}
    others = sorted(ran - {asked})
    if not others:
        return None
    return (
        f"ran on {', '.join(others)} instead of {asked}: that server did not have {asked} "
        "loaded (`bygheartd models` shows what each server has)"
    )
