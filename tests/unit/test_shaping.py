"""Budgets over rolling windows: what fits, when the next start fits, forecasts."""

from __future__ import annotations

import pytest

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.shaping import (
    EPSILON,
    Use,
    UseLog,
    allowance,
    fits,
    forecast,
    next_fit,
)

PER_MINUTE = Budget(30, 60, Unit.MESSAGES)
PER_DAY = Budget(10_000, 86_400, Unit.RECIPIENTS)
M365 = (PER_MINUTE, PER_DAY)


def log_of(*uses: tuple[float, int]) -> UseLog:
    return UseLog(Use(at, 1, rcpts) for at, rcpts in uses)


def test_thirty_a_minute() -> None:
    log = log_of(*[(float(i), 1) for i in range(30)])
    assert not fits(M365, log, 30.0, 1)
    assert allowance(M365, log, 30.0) == 0
    # The first start (at 0) leaves the window strictly after 60 s.
    assert next_fit(M365, log, 30.0, 1) == pytest.approx(60 + EPSILON)
    assert fits(M365, log, 60 + EPSILON, 1)
    assert allowance(M365, log, 60.5) == 1


def test_recipients_per_day_wait_for_the_oldest_to_age_out() -> None:
    log = log_of((0.0, 6000), (100.0, 4000))
    assert not fits(M365, log, 200.0, 1)
    assert next_fit(M365, log, 200.0, 1) == pytest.approx(86_400 + EPSILON)
    assert next_fit(M365, log, 200.0, 5000) == pytest.approx(86_400 + EPSILON)
    assert next_fit(M365, log, 200.0, 6001) == pytest.approx(86_500 + EPSILON)


def test_a_transaction_larger_than_the_budget_goes_alone() -> None:
    small = (Budget(10, 60, Unit.RECIPIENTS),)
    assert fits(small, UseLog(), 0.0, 50)
    assert not fits(small, log_of((0.0, 50)), 30.0, 50)


def test_out_of_order() -> None:
    log = log_of((10.0, 1), (5.0, 2))
    log.add(Use(7.0, 1, 3))
    assert log.times == [5.0, 7.0, 10.0]
    assert log.held(Budget(100, 60, Unit.RECIPIENTS), 20.0) == 6


def test_no_limits_without_budgets() -> None:
    assert fits((), UseLog(), 0.0, 1000) and allowance((), UseLog(), 0.0) is None
    assert next_fit((), UseLog(), 5.0, 1) == 5.0


def test_forecast_counts_whole_windows() -> None:
    assert forecast(M365, UseLog(), 0.0, ahead=0) == 0.0
    assert forecast(M365, UseLog(), 0.0, ahead=29) == 0.0
    assert forecast(M365, UseLog(), 0.0, ahead=30) == 60.0
    assert forecast(M365, UseLog(), 0.0, ahead=15_000) == 86_400.0


def test_budget_use_in_words() -> None:
    from mailvia.domain.shaping import describe_use

    log = log_of(*[(float(i), 100) for i in range(12)], (-50_000.0, 2000))
    assert describe_use(M365, log, 30.0) == ("12/30 this minute, 3,200/10,000 recipients in 24 h")
