"""The quality gate's retake policy (DESIGN.md "Takes you can keep"): whether a job whose
takes all failed the gate is made again, and the request it is made again with.

Deciding is separate from moving: `delivery.py` asks here once the plugins have judged the
takes, and the move itself (`processing` -> `queued`, its history line and notifications)
goes through `lifecycle.py`. Money is decided here: a retake is made only while the job has
retakes left, the day's retake allowance (`[retakes] daily_credits`, counted from the
ledger) has room for it, and the budget has too; otherwise the job ends with a warning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bygheartd.catalog import credits_phrase
from bygheartd.config import Config
from bygheartd.engine.budget import Budget
from bygheartd.jobs import Job, iso, utcnow

NO_PASS_WARNING = "no take passed the quality gate"
_SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class GateFailure:
    """Every take of a job failed the gate: what was found, and what asks for a retake."""

    codes: tuple[str, ...]  # every finding's code, each once, in the order found
    asking: tuple[str, ...]  # those among `[retakes] when`
    reason: str  # the findings in words, for the history and the notifications


def gate_failure(job: Job, config: Config) -> GateFailure | None:
    """None when a take passes, or when the takes were not all judged (no `quality`
    plugin, or it failed on one): a gate that did not look never spends credits."""
    quality = (job.result.postprocess or {}).get("quality")
    takes = job.takes()
    if not isinstance(quality, Mapping) or not takes:
        return None
    codes: list[str] = []
    messages: list[str] = []
    for take in takes:
        verdict = quality.get(take.path.name)
        if not isinstance(verdict, Mapping) or verdict.get("verdict") != "fail":
            return None
        for finding in verdict.get("findings") or ():
            if isinstance(finding, Mapping):
                code = str(finding.get("code") or "")
                codes.append(code)
                messages.append(_finding_only(str(finding.get("message") or code)))
    unique = tuple(dict.fromkeys(c for c in codes if c))
    wanted = set(config.retakes.when)
    return GateFailure(
        codes=unique,
        asking=tuple(c for c in unique if c in wanted),
        reason="; ".join(dict.fromkeys(messages)) or "every take failed",
    )


# The advice a finding ends with ("listen to it, and retry the job if so") is for a person
# deciding alone; a retake's reason says what was found, the retake is the retry.
_ADVICE = re.compile(r"\s*[;:]\s*(?:listen to\b.*|retry the job\b.*)$", re.IGNORECASE)


def _finding_only(message: str) -> str:
    return _ADVICE.sub("", message) or message


async def retake_refusal(job: Job, config: Config, budget: Budget) -> str | None:
    """Why the job is not made again (None: it is): retakes used up or off, the day's
    retake allowance spent, or a cost the budget cannot pay now."""
    allowed = config.retakes.max
    used = len(job.result.retakes)
    if allowed == 0:
        return "retakes are off ([retakes] max = 0)"
    if used >= allowed:
        these = "its retake is" if used == 1 else f"its {used} retakes are"
        return f"{these} used up ([retakes] max = {allowed})"
    cost = job.credits
    if not budget.counts_credits or cost <= 0:
        return None
    daily = config.retakes.daily_credits
    spent = await budget.retake_credits_today()
    if spent + cost > daily:
        return (
            f"today's retake allowance is spent: {spent} of {credits_phrase(daily)} used, "
            f"a retake needs {cost} ([retakes] daily_credits)"
        )
    too_much = budget.too_expensive(cost)
    if too_much is not None:
        return too_much
    hold = await budget.check(cost)
    if hold is not None:
        return f"a retake does not fit the budget now: {hold.reason}"
    return None


def fresh_seeds(takes: int, used: set[int]) -> int | list[int]:
    """New seeds, none used before by this job: one per take (a single one for one take)."""
    draw = random.SystemRandom()
    seeds: list[int] = []
    while len(seeds) < max(1, takes):
        seed = draw.randint(0, _SEED_MAX)
        if seed not in used and seed not in seeds:
            seeds.append(seed)
    return seeds[0] if len(seeds) == 1 else seeds


def _seeds_used(job: Job) -> set[int]:
    used: set[int] = set()
    values: list[Any] = [*job.result.seeds]
    for request in (job.request, job.result.request_before_plugins or {}):
        seed = request.get("seed")
        values.extend(seed if isinstance(seed, list) else [seed])
    for value in values:
        try:
            used.add(int(str(value)))
        except (TypeError, ValueError):
            continue
    return used


@dataclass(frozen=True)
class RetakePlan:
    """What the job is queued again with: the request (a new seed) and the changed fields."""

    fields: dict[str, Any]
    seed: int | list[int]


def plan_retake(job: Job, config: Config, failure: GateFailure) -> RetakePlan:
    """The job's next submission: the same request with new seeds; its result remembers
    what was judged so far, so the retake's takes join the job's instead of replacing them.
    The queue fields are reset as for a first submission (its own attempts and polls)."""
    # Imported here: the service imports this module, and `bygheartd list` must start
    # without the request model (pydantic).
    from bygheartd.songs.request import RequestRules, SongRequest

    rules = RequestRules(backend=config.backend, max_job_credits=None)
    takes = int(job.request.get("takes") or 1)
    seed = fresh_seeds(takes, _seeds_used(job))
    request = SongRequest.build({**job.request, "seed": seed}, rules)
    before = job.result.request_before_plugins
    result = job.result.but(
        retakes=(
            *job.result.retakes,
            {"at": iso(utcnow()), "findings": list(failure.codes), "credits": job.credits},
        ),
        # Plugins run again from the request as queued: with the new seed, theirs too.
        request_before_plugins=None if before is None else {**before, "seed": seed},
        processed_files=tuple(f.path.name for f in job.files),
        processed_before=dict(job.result.postprocess or {}),
        postprocess=None,
        # The gate chooses again among all the takes; a person's choice stays.
        keeper=job.result.keeper if job.result.keeper_by == "person" else None,
        keeper_by=job.result.keeper_by if job.result.keeper_by == "person" else None,
        download_attempts=0,
        unknown_polls=0,
    )
    fields: dict[str, Any] = {
        "request": request.model_dump(mode="json", exclude_none=True),
        "api_body": request.to_api_body(),
        "result": result,
        "task_id": None,
        "attempts": 0,
        "progress": None,
        "eta_seconds": None,
        "resumes_at": None,
        "hold_kind": None,
        "unknown_since": None,
        "progress_at": None,
        "resubmits": 0,
    }
    return RetakePlan(fields=fields, seed=seed)


def retake_line(job: Job, failure: GateFailure, number: int, allowed: int) -> str:
    """The history reason and log text of one retake: why, which one, what it may cost."""
    cost = f", {credits_phrase(job.credits)}" if job.credits else ""
    return f"retake {number} of {allowed}{cost}: {failure.reason}"


def retakes_possible(cost: int, config: Config) -> int:
    """How many retakes a job of `cost` credits may get, for the cost shown before
    submitting: `[retakes] max`, fewer when the daily retake allowance cannot pay that many."""
    allowed = config.retakes.max
    if "quality" not in config.plugins.enabled:
        return 0  # no gate, no retake
    if cost <= 0:
        return allowed
    return min(allowed, config.retakes.daily_credits // cost)


def merged_postprocess(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> dict[str, Any]:
    """What plugins said of the earlier takes and of the retake's, as one sidecar block:
    per-take tables (the quality figures by file name) are merged, anything else is the
    latest plugin's word."""
    merged: dict[str, Any] = dict(before or {})
    for name, value in now.items():
        earlier = merged.get(name)
        if isinstance(earlier, Mapping) and isinstance(value, Mapping):
            merged[name] = {**earlier, **value}
        else:
            merged[name] = value
    return merged
