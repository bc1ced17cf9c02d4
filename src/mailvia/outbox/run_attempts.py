"""A channel run's attempts: one claimed message sent in transactions of at most
max_recipients_per_message recipients, each within the budgets, marked started before it
begins, with the credentials the channel signs in with; each settled as the domain says
(domain/delivery.py), its effect on the channel noted and the run's concurrency moved with it.

Side effects: takes and ends budget use and marks messages started in the store; sends over
the transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from itertools import islice
from typing import NoReturn

from mailvia.domain.clock import Instant
from mailvia.domain.delivery import ChannelEffect, Settlement, TransactionResult, settle
from mailvia.domain.errors import CredentialsFailed, StoreUnavailable
from mailvia.domain.message import Envelope, State
from mailvia.domain.oauth import refused_after_renewal
from mailvia.domain.replies import Outcome, Stage, credentials_rejected
from mailvia.outbox.ports import AttemptRecord, Claim, Credentials
from mailvia.outbox.run_records import RunRecords

log = logging.getLogger(__name__)

# How far the started marks go ahead of a channel's connections, in max_connections: one
# commit of marks (a pipe to the store process, a thread, SQLite's fsync or PostgreSQL's
# round trips) takes several ms, and with 20 connections at ~5,000 msg/s a lead of 40
# messages (2) ran out before it came back: the connections waited for marks ~40% of their
# time (branch `worker`, docs/benchmarks.md). At a crash fewer than MARKS_AHEAD + 1 times
# max_connections unsent messages are flagged possible_duplicate.
MARKS_AHEAD = 4


class LeaseLost(Exception):
    """The worker no longer holds the claim's lease."""


def _lost(claim: Claim) -> NoReturn:
    log.warning("message %s: its lease was lost before sending; not sent", claim.message_id)
    raise LeaseLost


def _no_credentials(settlement: Settlement) -> Settlement:
    """An attempt for which no credentials could be had, for a while only (the token
    endpoint down: 451 4.4.2): the next message would ask the endpoint again and fail alike,
    so the run ends as for a server that cannot be reached (`UNREACHABLE`: the rest of the
    claimed mail is left untried, and the channel waits as a throttle escalates), not one
    token request per queued message. A refusal (the consent gone) disconnects already."""
    retry = all(r.outcome is Outcome.RETRY for r in settlement.recipients)
    if settlement.channel_effect is not ChannelEffect.NONE or not retry:
        return settlement
    reply = settlement.recipients[0].reply if settlement.recipients else None
    return replace(settlement, channel_effect=ChannelEffect.UNREACHABLE, channel_reply=reply)


class RunAttempts(RunRecords):
    """Attempts for a channel run."""

    async def _attempt(self, claim: Claim) -> AttemptRecord | None:
        settlements: list[Settlement] = []
        untried: list[str] = []
        size = self.channel.max_recipients_per_message
        chunks = [claim.pending[i : i + size] for i in range(0, len(claim.pending), size)]
        for chunk in chunks:
            first = None if settlements else claim
            try:
                taken = None if self.stopped else self._take_budget(len(chunk), first)
            except StoreUnavailable:
                if not settlements:
                    raise
                taken, self.store_down = None, True  # a later chunk: left for the next try
            if taken is None:
                if not settlements:
                    return None
                untried.extend(chunk)
                continue
            if first is not None and self.ledger is None:
                await self._mark_started(claim)
                if self.stopped:  # another connection disconnected or throttled meanwhile
                    return None
            cohort = self.ctx.concurrency.cohort(self.channel)
            started = time.perf_counter()
            result, reached = await self._send(Envelope(claim.mail_from, chunk), claim.content)
            seconds = time.perf_counter() - started
            if self.ledger is not None and taken:
                self._finish_budget(taken, self.clock(), reached=reached)
            now = self.clock()
            settlement = settle(
                result,
                pending=chunk,
                failures=claim.failures,
                policy=self.channel.retry,
                now=now,
                expires_at=claim.expires_at,
                rand=self.ctx.rand(),
            )
            if not reached:
                settlement = _no_credentials(settlement)
            settlements.append(settlement)
            outcomes = [str(r.outcome) for r in settlement.recipients]
            self.ctx.metrics.attempt(self.channel.id, seconds, outcomes)
            self._note_effect(settlement)
            self._pace(settlement, now, cohort)
        return self._record(claim, settlements, untried, self.clock())

    async def _mark_started(self, claim: Claim) -> None:
        """Commit that this message's transaction starts (before MAIL or the API call): if
        this worker dies now, whoever takes the message over flags it possible_duplicate.
        The marks go ahead of the connections by max_connections to MARKS_AHEAD x
        max_connections messages (the next ones in the queue, a group at a time), so that
        one commit serves many transactions and is made before they need it; while a commit
        of marks is under way, each transaction tops them up to MARKS_AHEAD x
        max_connections again (those join the next commit: the slower the commits, the
        larger their groups). A budgeted channel's ledger marks each exactly as it takes
        the budget. Raises LeaseLost when another worker has it."""
        size = self.channel.max_connections
        marked = 0  # marks are made in queue order: the marked messages lead the queue
        for queued in self.queue:
            if queued.seq not in self.marks:
                break
            marked += 1
        own = () if claim.seq in self.marks else (claim.seq,)
        group: tuple[int, ...] = ()
        if own or marked < size or self.ctx.liveness.marking:
            wanted = max(MARKS_AHEAD * size - marked - len(own), 0)
            ahead = islice((c.seq for c in self.queue if c.seq not in self.marks), wanted)
            group = (*own, *ahead)
        if group:
            marking = asyncio.ensure_future(self.ctx.liveness.started(group, self.clock()))
            self.marks.update((seq, (marking, i)) for i, seq in enumerate(group))
        pending, index = self.marks.pop(claim.seq)
        if not (await pending)[index]:
            _lost(claim)

    async def _send(self, envelope: Envelope, content: bytes) -> tuple[TransactionResult, bool]:
        """One transaction, and whether it reached the provider with mail to send. An OAuth
        mailbox whose token the server refuses gets one fresh token and one more try; a
        second refusal settles as channel_broken, saying to reconnect with the provider.
        When no credentials can be had (the token's renewal refused, the token endpoint
        down, no consent stored), the attempt settles with the reply the source gave, and
        it did not reach the provider: no mail was offered (a try before it was refused at
        AUTH), so it must not use the channel's budgets."""
        rejected: Credentials | None = None
        while True:
            try:
                credentials = await self._credentials(rejected)
            except CredentialsFailed as failed:
                return TransactionResult(Stage.AUTH, failed.reply), False
            result = await self.ctx.transport.send(self.channel, credentials, envelope, content)
            provider = self.channel.oauth
            if provider is None or not credentials_rejected(result.reply, result.stage):
                return result, True
            if rejected is not None and result.reply is not None:
                # A token renewed a moment ago is refused too: the consent itself is gone.
                return replace(result, reply=refused_after_renewal(provider, result.reply)), True
            rejected = credentials

    async def _credentials(self, rejected: Credentials | None) -> Credentials | None:
        """A password is asked for once a run; an OAuth token every time (the source keeps it
        in memory and renews it ahead of expiry, so a long run never sends a stale one)."""
        if self.channel.oauth is None and self.asked:
            return self.credentials
        credentials = await self.ctx.credentials(self.channel, rejected=rejected)
        self.credentials, self.asked = credentials, True
        return credentials

    def _take_budget(self, recipients: int, first: Claim | None) -> int | None:
        """The ledger id of a transaction allowed to start now (0 without budgets), or None
        when the budgets are spent for now. For a message's first transaction the ledger
        also marks it started; raises LeaseLost when another worker has it."""
        if self.ledger is None:
            return 0
        start = (first.seq, self.ctx.options.worker) if first is not None else None
        taken, wait = self.ledger.take(self.clock(), recipients, start=start)
        if wait is not None:
            self.budget_wait = wait
        elif taken is None and first is not None:
            _lost(first)
        return taken

    def _finish_budget(self, taken: int, now: Instant, *, reached: bool = True) -> None:
        """End the ledger's in-flight row (give it back when the transaction never `reached`
        the provider); after the transaction, so a store outage now must not lose what was
        sent (the row then ends on its own, at its stale time)."""
        try:
            assert self.ledger is not None
            if reached:
                self.ledger.finish([(taken, now)])
            else:
                self.ledger.give_back([taken])
        except StoreUnavailable as exc:
            log.info("channel %s: budget use not ended (%s)", self.channel.id, exc)

    def _note_effect(self, settlement: Settlement) -> None:
        if any(r.state is State.DELIVERED for r in settlement.recipients):
            self.delivered_any = True
        effect = settlement.channel_effect
        if effect is not ChannelEffect.NONE and (
            self.effect is ChannelEffect.NONE or effect is ChannelEffect.DISCONNECT
        ):
            self.effect = effect
            self.effect_reply = str(settlement.channel_reply)
            reply = settlement.channel_reply
            self.effect_refusal = reply.refusal if reply is not None else None
            self.effect_wait = settlement.wait

    def _pace(self, settlement: Settlement, now: Instant, cohort: int) -> None:
        """Move the run's gate with the channel's concurrency (`cohort`: the one the
        transaction started in). When a 421 lowered it, the channel's connections above the
        new width close (idle ones now, busy ones as their transaction ends; the one told
        421 is closed already), so the server sees fewer sessions, not idle ones kept open,
        and no transaction in flight is cut."""
        allowed = self.ctx.concurrency.settled(self.channel, settlement, now, started_in=cohort)
        if allowed == self.gate.limit:
            return
        if allowed < self.gate.limit:
            self.ctx.transport.narrow(self.channel.id, allowed)
        self.gate.resize(allowed)
