"""The retry schedule: Postfix-like doubling with jitter, a ceiling, and a give-up time."""

from __future__ import annotations

import pytest

from mailvia.domain.errors import InvalidInput
from mailvia.domain.retry import RetryPolicy


@pytest.mark.parametrize(
    ("failures", "expected"), [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (20, 4000)]
)
def test_doubling_to_the_ceiling_without_jitter(failures: int, expected: float) -> None:
    assert RetryPolicy().delay(failures, rand=0.5) == pytest.approx(expected)


def test_jitter_stays_within_twenty_percent() -> None:
    policy = RetryPolicy()
    assert policy.delay(1, rand=0.0) == pytest.approx(240)
    assert policy.delay(1, rand=0.999999) == pytest.approx(360, rel=1e-4)


def test_last_try_lands_on_the_give_up_time_then_none() -> None:
    policy = RetryPolicy(give_up_after=1000)
    expires = 1000.0
    assert policy.next_attempt_at(failures=5, now=900, expires_at=expires, rand=0.5) == expires
    assert policy.next_attempt_at(failures=5, now=1000, expires_at=expires, rand=0.5) is None


def test_five_days_by_default() -> None:
    assert RetryPolicy().give_up_after == 5 * 86400


@pytest.mark.parametrize(
    "kwargs", [{"first_delay": 0}, {"first_delay": 10, "max_delay": 5}, {"jitter": 1.0}]
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RetryPolicy(**kwargs)
