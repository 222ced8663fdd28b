"""The credit ledger's rules: daily cap, monthly allowance with rollover, time zones, plans."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bygheartd.config import parse_config
from bygheartd.engine.budget import Budget
from bygheartd.store.store import Store


def budget(tmp_path: Path, **section: object) -> Budget:
    config = parse_config({"budget": section, "folders": {"state": str(tmp_path)}})
    return Budget(config, Store.open(tmp_path))


def spend(b: Budget, credits: int, day: str, month: str, job: str = "j") -> None:
    b.store.record_credits(
        job_id=job, model="m", credits=credits, kind="reserve", day=day, month=month
    )


NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_daily_cap_holds_until_midnight(tmp_path: Path) -> None:
    b = budget(tmp_path)
    spend(b, 28, "2026-11-24", "2026-11")
    assert b.check(2, at=NOON) is None
    hold = b.check(4, at=NOON)
    assert hold is not None and "28 of 30 used today" in hold.reason
    assert hold.resumes_at == datetime(2026, 11, 25, tzinfo=UTC)


def test_monthly_allowance_includes_rollover_from_last_month(tmp_path: Path) -> None:
    b = budget(tmp_path)
    spend(b, 150, "2026-10-10", "2026-10")  # 50 unused in October
    assert b.rollover_in("2026-11") == 50
    spend(b, 245, "2026-11-01", "2026-11")
    assert b.check(4, at=NOON) is None  # 245 + 4 <= 200 + 50
    hold = b.check(6, at=NOON)
    assert hold is not None and "monthly credits used up" in hold.reason
    assert hold.resumes_at == datetime(2026, 12, 1, tzinfo=UTC)


def test_rollover_is_capped_and_unknown_months_roll_nothing(tmp_path: Path) -> None:
    b = budget(tmp_path)
    assert b.rollover_in("2026-11") == 0  # never used before: nothing to carry
    spend(b, 10, "2026-10-10", "2026-10")
    assert b.rollover_in("2026-11") == 60


def test_days_turn_in_the_configured_time_zone(tmp_path: Path) -> None:
    b = budget(tmp_path, timezone="America/New_York")
    late = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # still the 24th in New York
    assert b.period(late) == ("2026-11-24", "2026-11")
    assert b.next_day(late).astimezone(UTC) == datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def test_refund_returns_credits_to_the_day_they_were_spent(tmp_path: Path) -> None:
    b = budget(tmp_path)
    spend(b, 4, "2026-11-23", "2026-11", job="old")
    assert b.refund("old", "m") == 4
    assert b.store.credits_spent(day="2026-11-23") == 0
    assert b.refund("old", "m") == 0  # never twice


def test_ultimate_has_no_caps_and_self_hosted_no_credits(tmp_path: Path) -> None:
    ultimate = budget(tmp_path / "u", plan="ultimate")
    spend(ultimate, 500, "2026-11-24", "2026-11")
    assert ultimate.check(8, at=NOON) is None and ultimate.too_expensive(32) is None
    selfhosted = budget(tmp_path / "s", plan="self-hosted")
    assert not selfhosted.counts_credits and selfhosted.check(100, at=NOON) is None


def test_server_cap_wins_over_the_local_estimate(tmp_path: Path) -> None:
    b = budget(tmp_path)
    b.server_capped_until(datetime(2026, 11, 25, tzinfo=UTC))
    hold = b.check(1, at=NOON)
    assert hold is not None and "server" in hold.reason


def test_job_over_the_daily_cap_is_too_expensive(tmp_path: Path) -> None:
    reason = budget(tmp_path).too_expensive(32)
    assert reason is not None and "more than the daily cap of 30" in reason
