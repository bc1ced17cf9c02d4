"""A channel run's claims: up to a batch at a time, within what the budgets let start, and
more claimed in the background when the queue in hand is down to half a batch, so the claim
is back before the queue runs dry (on PostgreSQL a claim of 200 took longer than sending a
quarter of a batch: the connections waited for it); not again at once when the outbox was
just found drained (REFILL_PAUSE).

Side effects: claims messages in the store (under a lease, in a worker thread).
"""

from __future__ import annotations

import asyncio

from mailvia.domain.clock import Instant
from mailvia.outbox.run_context import RunState, in_thread

# After a claim came back short (the queue is drained), wait this long before claiming again
# while mail trickles in: each claim is a write transaction, and twenty connections claiming
# before every message would hold the write lock that intake needs.
REFILL_PAUSE = 0.05  # seconds


class RunClaims(RunState):
    """Claiming for a channel run."""

    async def _claim(self, now: Instant) -> bool:
        """Claim up to a batch, and no more than the budgets let start now beyond what is in
        hand (at least one when nothing is: its turn finds out when the budget frees up)."""
        opts = self.ctx.options
        limit = opts.batch
        allowed = None if self.ledger is None else self.ledger.allowance(now)
        if allowed is not None:
            wanted = allowed - len(self.queue)
            if wanted < 1 and self.queue:
                return False  # the claims in hand use up what the budgets allow
            limit = min(limit, max(wanted, 1))
        claims = await in_thread(
            lambda: self.store.claim(
                channel_id=self.channel.id,
                now=now,
                limit=limit,
                lease_until=now + opts.lease_seconds,
                worker=opts.worker,
            )
        )
        self.queue.extend(claims)
        self.claimed.extend(c.seq for c in claims)
        self.ctx.liveness.holding.update(c.seq for c in claims)
        self.drained_at = now if len(claims) < limit else None
        self.trickling = 0 < len(claims) < limit
        return bool(claims)

    def _refill(self, now: Instant) -> None:
        """Claim more before the queue runs dry, unless the outbox was just found drained, a
        claim is already on its way, or the run is RUN_SECONDS old (it ends with what it
        holds: a backlog does not keep one run, with its copy of the channel, for ever)."""
        if self.claiming is not None and not self.claiming.done():
            return
        if not self.young():
            return
        if len(self.queue) >= self.ctx.options.batch // 2:
            return
        if self.drained_at is not None and now - self.drained_at < REFILL_PAUSE:
            return
        self.claiming = asyncio.ensure_future(self._claim_more(now))

    async def _claim_more(self, now: Instant) -> None:
        try:
            await self._claim(now)
        except Exception as exc:  # StoreUnavailable or a fault: the run stops, `go` raises it
            self.fault = exc
