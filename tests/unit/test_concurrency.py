"""A channel's concurrency (domain/concurrency.py): halved by a generic 421, at least 1, once
per cohort (the 421s of transactions started before the cut do not cut again), grown back one
connection per RECOVER_DELIVERIES clean deliveries or RECOVER_SECONDS."""

from __future__ import annotations

import pytest

from mailvia.domain.concurrency import (
    RECOVER_DELIVERIES,
    RECOVER_SECONDS,
    Concurrency,
    service_closing,
)
from mailvia.domain.delivery import Settlement, TransactionResult, settle
from mailvia.domain.replies import Reply, Stage
from mailvia.domain.retry import RetryPolicy

T0 = 1_000_000.0
LIMIT = 5


def settled(stage: Stage, reply: str) -> Settlement:
    code, enhanced, text = reply.split(" ", 2)
    result = TransactionResult(stage, Reply(int(code), enhanced, text))
    return settle(
        result,
        pending=("a@example.com",),
        failures=0,
        policy=RetryPolicy(),
        now=T0,
        expires_at=T0 + 86_400,
        rand=0.5,
    )


CLOSING = settled(Stage.MAIL, "421 4.3.2 Service shutting down")
DELIVERED = settled(Stage.DATA_END, "250 2.0.0 OK queued")


@pytest.mark.parametrize(
    ("stage", "reply", "closing"),
    [
        (Stage.GREETING, "421 4.3.2 Service shutting down", True),
        (Stage.DATA, "421 4.4.2 Closing transmission channel", True),
        # A provider's throttle pauses the whole channel instead (domain/throttle.py).
        (Stage.MAIL, "421 4.7.0 Try again later, closing connection", False),
        (Stage.STARTTLS, "421 4.7.66 TLS 1.0 and 1.1 are not supported", False),  # broken
        (Stage.MAIL, "451 4.3.0 Temporary local problem", False),
        (Stage.DATA_END, "250 2.0.0 OK", False),
    ],
)
def test_only_a_generic_421_is_the_server_closing(stage: Stage, reply: str, closing: bool) -> None:
    assert service_closing(settled(stage, reply)) is closing


def closed(concurrency: Concurrency, limit: int, now: float) -> Concurrency:
    """After a 421 to a transaction started now (in the current cohort)."""
    return concurrency.after(CLOSING, limit, now, started_in=concurrency.cohort)


@pytest.mark.parametrize(
    ("limit", "closings", "allowed"),
    [(5, 1, 2), (5, 2, 1), (5, 3, 1), (20, 1, 10), (20, 2, 5), (1, 1, 1), (2, 1, 1)],
)
def test_each_421_after_a_cut_halves_it_again_and_never_below_one(
    limit: int, closings: int, allowed: int
) -> None:
    concurrency = Concurrency(limit)
    for i in range(closings):
        concurrency = closed(concurrency, limit, T0 + i)
    assert concurrency.allowed == allowed


def test_a_burst_of_421s_to_transactions_started_before_the_cut_halves_once() -> None:
    """Five connections told 421 together: 20 -> 10, not 20 -> 10 -> 5 -> 2 -> 1 -> 1."""
    concurrency = Concurrency(20)
    started_in = concurrency.cohort  # all five were in flight at full width
    for i in range(5):
        concurrency = concurrency.after(CLOSING, 20, T0 + i * 0.01, started_in=started_in)
    assert (concurrency.allowed, concurrency.cohort) == (10, 1)
    # A transaction started after the cut that is told 421 too: the server pushes back at 10.
    concurrency = concurrency.after(CLOSING, 20, T0 + 1, started_in=concurrency.cohort)
    assert (concurrency.allowed, concurrency.cohort) == (5, 2)


def test_the_cohort_outlives_the_recovery() -> None:
    """Back at full width the cohort is kept: a 421 to a transaction started before the cut,
    settled only now, does not cut again."""
    concurrency = closed(Concurrency(LIMIT), LIMIT, T0)
    recovered = concurrency.at(LIMIT, T0 + 10 * RECOVER_SECONDS)
    assert (recovered.allowed, recovered.cohort) == (LIMIT, 1)
    assert recovered.after(CLOSING, LIMIT, T0 + 601, started_in=0).allowed == LIMIT


def test_clean_deliveries_bring_it_back_one_step_at_a_time() -> None:
    concurrency = closed(closed(Concurrency(LIMIT), LIMIT, T0), LIMIT, T0)
    seen = [concurrency.allowed]
    for i in range(4 * RECOVER_DELIVERIES + 5):
        concurrency = concurrency.after(DELIVERED, LIMIT, T0 + i * 0.01, started_in=0)
        seen.append(concurrency.allowed)
    steps = [seen.index(n) for n in range(1, LIMIT + 1)]
    assert steps == [0, *(k * RECOVER_DELIVERIES for k in range(1, LIMIT))]
    assert seen[-1] == LIMIT  # and no further


def test_a_421_while_recovering_starts_the_count_again() -> None:
    concurrency = closed(Concurrency(LIMIT), LIMIT, T0)  # 2
    for _ in range(RECOVER_DELIVERIES - 1):
        concurrency = concurrency.after(DELIVERED, LIMIT, T0, started_in=concurrency.cohort)
    concurrency = closed(concurrency, LIMIT, T0)  # 1
    concurrency = concurrency.after(DELIVERED, LIMIT, T0, started_in=concurrency.cohort)
    assert (concurrency.allowed, concurrency.deliveries) == (1, 1)


@pytest.mark.parametrize(
    ("elapsed", "allowed"),
    [
        (0, 1),
        (RECOVER_SECONDS - 1, 1),
        (RECOVER_SECONDS, 2),
        (3.5 * RECOVER_SECONDS, 4),
        (4 * RECOVER_SECONDS, 5),
        (3_600, 5),
    ],
)
def test_time_without_a_421_brings_it_back_too(elapsed: float, allowed: int) -> None:
    concurrency = closed(closed(Concurrency(LIMIT), LIMIT, T0), LIMIT, T0)
    assert concurrency.at(LIMIT, T0 + elapsed).allowed == allowed


def test_a_lowered_max_connections_caps_it_and_a_raised_one_is_grown_into() -> None:
    assert Concurrency(5).at(3, T0).allowed == 3
    lowered = closed(Concurrency(5), 5, T0)  # 2
    assert lowered.at(8, T0).allowed == 2
    assert lowered.at(8, T0 + 6 * RECOVER_SECONDS).allowed == 8
