"""The hosted wrapper's keys, plans and credits: which key gets which plan, what a
submit costs, and a per-key ledger with daily/monthly caps that turn at 00:00 UTC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bygheartd.catalog import DEFAULT_HOSTED_MODEL, HOSTED_MODELS

# The price list is a protocol constant (API.md), so it comes from the catalog, the one
# module of ours the simulator may import.
HOSTED_MODEL_CREDITS: dict[str, int] = {m.name: m.credits for m in HOSTED_MODELS.values()}
HOSTED_MODEL_PURPOSE: dict[str, str] = {m.name: m.purpose for m in HOSTED_MODELS.values()}


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    ULTIMATE = "ultimate"


def plan_for_key(key: str) -> Plan | None:
    """`bgh_free_*` Free, `bgh_ult*` Ultimate, other `bgh_*` Pro, anything else invalid."""
    if not key.startswith("bgh_") or len(key) <= len("bgh_"):
        return None
    if key.startswith("bgh_free_"):
        return Plan.FREE
    if key.startswith("bgh_ult"):
        return Plan.ULTIMATE
    return Plan.PRO


def key_label(key: str) -> str:
    """A stable name for a key that does not reveal it (ledger rows, stats)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{key[:4]}…{digest}"


def credit_cost(model: str | None, batch_size: int) -> int:
    """Unknown names silently use the default model, so they cost what it costs."""
    per_take = HOSTED_MODEL_CREDITS.get(model or "", HOSTED_MODEL_CREDITS[DEFAULT_HOSTED_MODEL])
    return per_take * batch_size


def seconds_until_next_day(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - moment).total_seconds() + 0.999))


def seconds_until_next_month(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    first = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((first - moment).total_seconds() + 0.999))


@dataclass
class LedgerRow:
    plan: Plan
    day: str = ""
    month: str = ""
    used_today: int = 0
    used_month: int = 0
    charged_total: int = 0
    refunded_total: int = 0
    submits: int = 0
    per_model: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "plan": self.plan.value,
            "day": self.day,
            "month": self.month,
            "used_today": self.used_today,
            "used_month": self.used_month,
            "charged_total": self.charged_total,
            "refunded_total": self.refunded_total,
            "submits": self.submits,
            "per_model": dict(self.per_model),
        }


@dataclass(frozen=True)
class CreditRefusal:
    """Why a submit was refused: the 429 body and its Retry-After."""

    body: dict[str, object]
    retry_after: int


@dataclass(frozen=True)
class Charge:
    label: str
    credits: int
    day: str
    month: str


class Ledger:
    """Credits per key; Ultimate keys are recorded but never capped."""

    def __init__(self, daily_cap: int, monthly_cap: int) -> None:
        self.daily_cap = daily_cap
        self.monthly_cap = monthly_cap
        self.rows: dict[str, LedgerRow] = {}

    def _row(self, key: str, plan: Plan, now: float) -> tuple[str, LedgerRow]:
        label = key_label(key)
        row = self.rows.setdefault(label, LedgerRow(plan=plan))
        moment = datetime.fromtimestamp(now, UTC)
        day, month = moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")
        if row.day != day:
            row.day, row.used_today = day, 0
        if row.month != month:
            row.month, row.used_month = month, 0
        return label, row

    def charge(
        self, key: str, plan: Plan, model: str | None, cost: int, now: float
    ) -> Charge | CreditRefusal:
        label, row = self._row(key, plan, now)
        if plan is Plan.PRO:
            if row.used_month + cost > self.monthly_cap:
                wait = seconds_until_next_month(now)
                return CreditRefusal(
                    {
                        "error": "credit_limit_reached",
                        "message": f"Monthly credits exhausted ({row.used_month} of "
                        f"{self.monthly_cap} used; this request needs {cost}). "
                        "Credits renew on the 1st at 00:00 UTC.",
                        "scope": "monthly",
                        "limit": self.monthly_cap,
                        "used": row.used_month,
                        "requested": cost,
                        "retry_after": wait,
                    },
                    wait,
                )
            if row.used_today + cost > self.daily_cap:
                wait = seconds_until_next_day(now)
                return CreditRefusal(
                    {
                        "error": "credit_limit_reached",
                        "message": f"Daily credit limit reached ({row.used_today} of "
                        f"{self.daily_cap} used today; this request needs {cost}). "
                        "The limit resets at 00:00 UTC.",
                        "scope": "daily",
                        "limit": self.daily_cap,
                        "used": row.used_today,
                        "requested": cost,
                        "retry_after": wait,
                    },
                    wait,
                )
        row.used_today += cost
        row.used_month += cost
        row.charged_total += cost
        row.submits += 1
        name = model if model in HOSTED_MODEL_CREDITS else DEFAULT_HOSTED_MODEL
        row.per_model[name] = row.per_model.get(name, 0) + cost
        return Charge(label, cost, row.day, row.month)

    def refund(self, charge: Charge) -> None:
        """Failed generations are refunded, to the day and month they were charged."""
        row = self.rows.get(charge.label)
        if row is None:
            return
        if row.day == charge.day:
            row.used_today = max(0, row.used_today - charge.credits)
        if row.month == charge.month:
            row.used_month = max(0, row.used_month - charge.credits)
        row.refunded_total += charge.credits

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {label: row.as_json() for label, row in self.rows.items()}

    def reset(self) -> None:
        self.rows.clear()
