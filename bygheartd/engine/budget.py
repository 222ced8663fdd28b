"""The local credit ledger: reserve at submit, refund on failure, daily cap and monthly
allowance with rollover. It only keeps the daemon from burning credits blindly: the
server is the final judge, and its 429 always wins over this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bygheartd.catalog import credits_phrase
from bygheartd.config import Config, LiveConfig
from bygheartd.jobs import Job, iso, parse_iso, utcnow
from bygheartd.store.boundary import JobStore
from bygheartd.store.columns import CreditCaps

SERVER_CAP_KEY = "server_cap_until"
# Ledger kinds of a retake's reservation and of its refund: the daily retake allowance
# (`[retakes] daily_credits`) is what lines of these kinds add up to in a day.
RETAKE_RESERVE = "retake"
RETAKE_REFUND = "retake refund"


def is_retake(job: Job) -> bool:
    """Whether the job's current submission is a retake (the quality gate asked for it)."""
    return bool(job.result.retakes)


@dataclass(frozen=True)
class Hold:
    """Why a job cannot be submitted now, and when it can."""

    reason: str
    resumes_at: datetime


class Budget:
    def __init__(self, config: Config | LiveConfig, store: JobStore) -> None:
        self._live = LiveConfig.of(config)
        self.store = store

    @property
    def config(self) -> Config:
        return self._live.current

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.budget.timezone)

    @property
    def limited(self) -> bool:
        return self.config.plan == "pro"

    @property
    def counts_credits(self) -> bool:
        return self.config.plan != "self-hosted"

    def period(self, at: datetime | None = None) -> tuple[str, str]:
        local = (at or utcnow()).astimezone(self.zone)
        return local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")

    def next_day(self, at: datetime | None = None) -> datetime:
        local = (at or utcnow()).astimezone(self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        return start.replace(tzinfo=self.zone)

    def next_month(self, at: datetime | None = None) -> datetime:
        local = (at or utcnow()).astimezone(self.zone)
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (first + timedelta(days=32)).replace(day=1)

    async def rollover_in(self, month: str) -> int:
        """Unused credits of the month before `month`, up to `rollover_max`.

        Only counted when the ledger saw that month (otherwise we know nothing of it).
        """
        year, mon = (int(x) for x in month.split("-"))
        prev = f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
        first = await self.store.first_ledger_month()
        if first is None or first > prev:
            return 0
        unused = self.config.budget.monthly_credits - await self.store.credits_spent(month=prev)
        return max(0, min(self.config.budget.rollover_max, unused))

    async def check(self, cost: int, at: datetime | None = None) -> Hold | None:
        """None when `cost` fits today and this month; else why not and until when."""
        if not self.counts_credits or cost <= 0:
            return None
        now = at or utcnow()
        server_cap = parse_iso(await self.store.get_meta(SERVER_CAP_KEY))
        if server_cap is not None and server_cap > now:
            return Hold("the server reported its credit limit reached", server_cap)
        if not self.limited:
            return None
        day, month = self.period(now)
        cap = self.config.budget.daily_credits
        spent_today = await self.store.credits_spent(day=day)
        if spent_today + cost > cap:
            return Hold(
                f"daily credit cap reached: {spent_today} of {cap} used today, this job "
                f"needs {cost}",
                self.next_day(now),
            )
        allowance = self.config.budget.monthly_credits + await self.rollover_in(month)
        spent_month = await self.store.credits_spent(month=month)
        if spent_month + cost > allowance:
            return Hold(
                f"monthly credits used up: {spent_month} of {allowance} this month, this job "
                f"needs {cost}",
                self.next_month(now),
            )
        return None

    async def caps(self, at: datetime | None = None) -> CreditCaps | None:
        """The caps a reservation made now may not pass, checked again by the store in the
        transaction that books it (another daemon on a shared store may have spent since
        `check`); None when the plan has no caps."""
        if not self.limited:
            return None
        day, month = self.period(at)
        allowance = self.config.budget.monthly_credits + await self.rollover_in(month)
        return CreditCaps(day, month, self.config.budget.daily_credits, allowance)

    def too_expensive(self, cost: int) -> str | None:
        """A job that can never fit the daily cap is rejected, not held forever."""
        cap = self.config.budget.daily_credits
        if self.limited and cost > cap:
            return (
                f"this song costs {credits_phrase(cost)}, more than the daily cap of {cap}: use "
                "fewer takes or a cheaper model"
            )
        return None

    def ledger_entry(
        self, job_id: str, model: str | None, credits: int, kind: str
    ) -> dict[str, Any]:
        day, month = self.period()
        return {
            "job_id": job_id,
            "model": model,
            "credits": credits,
            "kind": kind,
            "day": day,
            "month": month,
        }

    async def refund(self, job_id: str, model: str | None, *, retake: bool = False) -> int:
        """Give back what the job's latest reservation still holds; returns the amount."""
        entry = await self.refund_entry(job_id, model, retake=retake)
        if entry is None:
            return 0
        await self.store.record_credits(**entry)
        return -int(entry["credits"])

    async def refund_entry(
        self, job_id: str, model: str | None, *, retake: bool = False
    ) -> dict[str, Any] | None:
        """The ledger line of a refund, to commit with the status change it belongs to
        (`retake`: of a retake's reservation, given back to the day's retake allowance too)."""
        if not self.counts_credits:
            return None
        reservation = await self.store.open_reservation(job_id)
        if reservation is None or reservation[0] <= 0:
            return None
        held, day, month = reservation
        return {
            "job_id": job_id,
            "model": model,
            "credits": -held,
            "kind": RETAKE_REFUND if retake else "refund",
            "day": day,
            "month": month,
        }

    async def retake_credits_today(self, at: datetime | None = None) -> int:
        """Credits retakes reserved today (less their refunds), in the budget's time zone."""
        day, _ = self.period(at)
        return await self.store.credits_of_kinds((RETAKE_RESERVE, RETAKE_REFUND), day=day)

    async def server_capped_until(self, until: datetime) -> None:
        await self.store.set_meta(SERVER_CAP_KEY, iso(until))

    async def summary(self, at: datetime | None = None) -> dict[str, Any]:
        now = at or utcnow()
        day, month = self.period(now)
        spent_today = await self.store.credits_spent(day=day)
        spent_month = await self.store.credits_spent(month=month)
        rollover = await self.rollover_in(month) if self.limited else 0
        allowance = self.config.budget.monthly_credits + rollover
        limited = self.limited
        return {
            "plan": self.config.plan,
            "timezone": self.config.budget.timezone,
            "today": {
                "day": day,
                "spent": spent_today,
                "cap": self.config.budget.daily_credits if limited else None,
                "left": max(0, self.config.budget.daily_credits - spent_today) if limited else None,
            },
            "month": {
                "month": month,
                "spent": spent_month,
                "allowance": allowance if limited else None,
                "rollover": rollover,
                "left": max(0, allowance - spent_month) if limited else None,
            },
            "by_model": await self.store.credits_by_model(month),
            "next_daily_release": iso(self.next_day(now)) if limited else None,
            "server_cap_until": await self.store.get_meta(SERVER_CAP_KEY),
        }

    async def left_today(self) -> int | None:
        if not self.limited:
            return None
        left: int | None = (await self.summary())["today"]["left"]
        return left
