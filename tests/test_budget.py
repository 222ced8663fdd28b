"""The credit ledger's rules: daily cap, monthly allowance with rollover, time zones, plans."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bygheartd.config import parse_config
from bygheartd.engine.budget import Budget
from bygheartd.store.threaded import SqliteJobStore

pytestmark = pytest.mark.anyio

MakeBudget = Callable[..., Budget]


@pytest.fixture
async def make_budget(tmp_path: Path) -> AsyncIterator[MakeBudget]:
    """`make_budget(folder, **[budget])`: a budget over a fresh store in `folder`."""
    stores: list[SqliteJobStore] = []

    def make(folder: Path = tmp_path, **section: object) -> Budget:
        folder.mkdir(parents=True, exist_ok=True)
        config = parse_config({"budget": section, "folders": {"state": str(folder)}})
        stores.append(SqliteJobStore.open(folder))
        return Budget(config, stores[-1])

    yield make
    for store in stores:
        await store.close()


async def spend(b: Budget, credits: int, day: str, month: str, job: str = "j") -> None:
    await b.store.record_credits(
        job_id=job, model="m", credits=credits, kind="reserve", day=day, month=month
    )


NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_daily_cap_holds_until_midnight(make_budget: MakeBudget) -> None:
    b = make_budget()
    await spend(b, 28, "2026-11-24", "2026-11")
    assert await b.check(2, at=NOON) is None
    hold = await b.check(4, at=NOON)
    assert hold is not None and "28 of 30 used today" in hold.reason
    assert hold.resumes_at == datetime(2026, 11, 25, tzinfo=UTC)


async def test_monthly_allowance_includes_rollover_from_last_month(make_budget: MakeBudget) -> None:
    b = make_budget()
    await spend(b, 150, "2026-10-10", "2026-10")  # 50 unused in October
    assert await b.rollover_in("2026-11") == 50
    await spend(b, 245, "2026-11-01", "2026-11")
    assert await b.check(4, at=NOON) is None  # 245 + 4 <= 200 + 50
    hold = await b.check(6, at=NOON)
    assert hold is not None and "monthly credits used up" in hold.reason
    assert hold.resumes_at == datetime(2026, 12, 1, tzinfo=UTC)


async def test_rollover_is_capped_and_unknown_months_roll_nothing(make_budget: MakeBudget) -> None:
    b = make_budget()
    assert await b.rollover_in("2026-11") == 0  # never used before: nothing to carry
    await spend(b, 10, "2026-10-10", "2026-10")
    assert await b.rollover_in("2026-11") == 60


async def test_days_turn_in_the_configured_time_zone(make_budget: MakeBudget) -> None:
    b = make_budget(timezone="America/New_York")
    late = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # still the 24th in New York
    assert b.period(late) == ("2026-11-24", "2026-11")
    assert b.next_day(late).astimezone(UTC) == datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


async def test_refund_returns_credits_to_the_day_they_were_spent(make_budget: MakeBudget) -> None:
    b = make_budget()
    await spend(b, 4, "2026-11-23", "2026-11", job="old")
    assert await b.refund("old", "m") == 4
    assert await b.store.credits_spent(day="2026-11-23") == 0
    assert await b.refund("old", "m") == 0  # never twice


async def test_ultimate_has_no_caps_and_self_hosted_no_credits(
    make_budget: MakeBudget, tmp_path: Path
) -> None:
    ultimate = make_budget(tmp_path / "u", plan="ultimate")
    await spend(ultimate, 500, "2026-11-24", "2026-11")
    assert await ultimate.check(8, at=NOON) is None and ultimate.too_expensive(32) is None
    selfhosted = make_budget(tmp_path / "s", plan="self-hosted")
    assert not selfhosted.counts_credits and await selfhosted.check(100, at=NOON) is None


async def test_server_cap_wins_over_the_local_estimate(make_budget: MakeBudget) -> None:
    b = make_budget()
    await b.server_capped_until(datetime(2026, 11, 25, tzinfo=UTC))
    hold = await b.check(1, at=NOON)
    assert hold is not None and "server" in hold.reason


async def test_job_over_the_daily_cap_is_too_expensive(make_budget: MakeBudget) -> None:
    reason = make_budget().too_expensive(32)
    assert reason is not None and "more than the daily cap of 30" in reason
