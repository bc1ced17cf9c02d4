"""A loop's view of a store outage (outbox/outage.py): one log line when it starts and one
when it ends, however many looks fail between; waits that grow from 0.5 s to the ceiling,
each drawn between half and all of it (jitter), and start again small after a recovery."""

from __future__ import annotations

import logging

import pytest

from mailvia.domain.errors import StoreUnavailable
from mailvia.outbox.outage import FIRST_WAIT, MOST_WAIT, Outage

DOWN = StoreUnavailable("the database is unavailable")


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("delivery", rand=lambda: 0.5)
    with caplog.at_level(logging.INFO, logger="mailvia.outbox.outage"):
        for second in range(50):
            outage.failed(100.0 + second, DOWN)
        outage.worked(160.0)
        outage.worked(161.0)  # no outage any more: nothing to say
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "store unavailable: delivery paused (the database is unavailable)",
        "store back after 60.0 s: delivery resumed",
    ]


@pytest.mark.parametrize("draw", [0.0, 0.999])
def test_waits_grow_to_the_ceiling_with_jitter(draw: float) -> None:
    outage = Outage("delivery", rand=lambda: draw)
    waits = [outage.failed(0.0, DOWN) for _ in range(10)]
    ceilings = [min(FIRST_WAIT * 2**i, MOST_WAIT) for i in range(10)]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert waits[-1] >= MOST_WAIT / 2  # never a busy loop, never longer than the ceiling
    outage.worked(1.0)
    assert outage.failed(2.0, DOWN) <= FIRST_WAIT  # a new outage starts small again
