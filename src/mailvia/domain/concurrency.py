"""A channel's concurrency: how many of its connections may be in a transaction at once now.

It starts at the channel's `max_connections`. A generic 421 ("service closing", not a
provider's throttle, which pauses the whole channel instead) means the server is pushing
back: the reliability matrix says "Retry; lower concurrency for that channel" and
"Concurrency metric drops, then recovers" (../shared/research/reliability_security.md (b)
row 12, and (e): "421 4.x.x (generic) | Service closing | RETRY, lower concurrency"). As
Postfix's queue manager does for a destination that fails (concurrency feedback,
https://www.postfix.org/SCHEDULER_README.html), it is cut at once and grown back slowly,
the way TCP shares a link: halve on a 421 (at least 1, so mail still moves), then one more
connection per `RECOVER_DELIVERIES` clean deliveries, or per `RECOVER_SECONDS` without a
421, back up to `max_connections`.

A burst counts once. Each cut opens a new *cohort* (`cohort`, a count of cuts): a
transaction belongs to the cohort in which it started, and only a 421 to a transaction of
the current cohort cuts again. The 421s of transactions already in flight when the width
was cut (five connections told 421 together, say) answer the width that was just cut, so
20 connections go to 10, not to 1; a 421 to a transaction started after the cut is the
server pushing back at the lower width, and halves it again. (Postfix likewise lowers a
destination's concurrency once per cohort of failures, not per failure.)

Pure: the time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailvia.domain.clock import Instant
from mailvia.domain.delivery import Settlement
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome, Stage

# A 421 halves the concurrency: the server said it is closing, so half the connections go at
# once (Postfix takes off one per failed cohort, which at 20 connections takes many rounds of
# refused sessions to come down; an explicit "closing" is worth a bigger step).
CUT_DIVISOR = 2
# One more connection after this many deliveries in a row without a 421: the server has
# shown it takes mail at the lower level (Postfix's positive feedback is one per window's
# worth of deliveries; ten is that for a typical 5-10 connection channel).
RECOVER_DELIVERIES = 10
# ... or after this long without a 421, so a channel whose mail only trickles in gets back
# to full width too (one minute, the channel's first throttle pause, domain/throttle.py).
RECOVER_SECONDS = 60.0


@dataclass(frozen=True)
class Concurrency:
    """A channel's concurrency now: `allowed` connections in a transaction at once,
    `deliveries` clean deliveries since it last changed, at `changed_at`; `cohort`: how
    many times it was cut (the cohort the transactions starting now belong to)."""

    allowed: int
    deliveries: int = 0
    changed_at: Instant = 0.0
    cohort: int = 0

    def at(self, limit: int, now: Instant) -> Concurrency:
        """As it stands at `now` for a channel of `limit` (max_connections): a step back up
        per RECOVER_SECONDS since it last changed, never above `limit`."""
        if self.allowed == limit:
            return self  # full width (deliveries are counted only below it)
        if self.allowed > limit:  # max_connections was lowered
            return self._full(limit)
        steps = int((now - self.changed_at) // RECOVER_SECONDS)
        if steps <= 0:
            return self
        if self.allowed + steps >= limit:
            return self._full(limit)
        return replace(
            self,
            allowed=self.allowed + steps,
            deliveries=0,
            changed_at=self.changed_at + steps * RECOVER_SECONDS,
        )

    def closing(self, limit: int, now: Instant, *, started_in: int) -> Concurrency:
        """After a generic 421 to a transaction started in cohort `started_in`: halved (at
        least 1) when that is the current cohort; otherwise as it stands (the cut that
        opened the current cohort already answered it)."""
        current = self.at(limit, now)
        if started_in < self.cohort:
            return current
        return Concurrency(max(current.allowed // CUT_DIVISOR, 1), 0, now, self.cohort + 1)

    def delivered(self, limit: int, now: Instant) -> Concurrency:
        """After a clean delivery: one step up every RECOVER_DELIVERIES of them."""
        current = self.at(limit, now)
        if current.allowed >= limit:
            return current
        if current.deliveries + 1 >= RECOVER_DELIVERIES:
            allowed = current.allowed + 1
            if allowed >= limit:
                return current._full(limit)
            return replace(current, allowed=allowed, deliveries=0, changed_at=now)
        return replace(current, deliveries=current.deliveries + 1)

    def after(
        self, settlement: Settlement, limit: int, now: Instant, *, started_in: int
    ) -> Concurrency:
        """After one transaction's settlement (the transaction started in cohort
        `started_in`): closing (a generic 421), delivered (a recipient taken, no 421), or as
        it stands."""
        if service_closing(settlement):
            return self.closing(limit, now, started_in=started_in)
        if self.allowed == limit:
            return self  # full width: nothing to count (the common case, once per message)
        if any(r.state is State.DELIVERED for r in settlement.recipients):
            return self.delivered(limit, now)
        return self.at(limit, now)

    def _full(self, limit: int) -> Concurrency:
        return Concurrency(limit, cohort=self.cohort)


def service_closing(settlement: Settlement) -> bool:
    """Whether the server answered a 421 that is only "service closing": classified retry
    (a 421 that is a provider's throttle or a broken channel has its own outcome), from an
    SMTP server (an HTTP API's 421 is "misdirected request")."""
    return any(
        r.reply.code == 421 and r.outcome is Outcome.RETRY and r.stage is not Stage.API
        for r in settlement.recipients
    )
