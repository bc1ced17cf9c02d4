"""The outbox's intake and leases in SQL: adding messages (with idempotency keys), finding
due channels, claiming messages under a lease and giving claims back.

A message is claimable when it is queued or deferred and due, or `sending` under a lease that
has expired (its worker died), and its channel is active and not throttled.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, InvalidInput, StoreUnavailable
from mailvia.domain.message import State
from mailvia.outbox.ports import Claim, NewMessage
from mailvia.store.claim_reads import read_claims
from mailvia.store.claim_sqlite import Lease, lease_still_claimable, recipients_sending
from mailvia.store.claims_pg import claim_leased
from mailvia.store.engine import Database
from mailvia.store.give_backs import LostClaims, give_back, give_back_lost
from mailvia.store.message_inserts import CONFLICT, insert_group
from mailvia.store.rows import among, chunks
from mailvia.store.tables import Time, channels, messages, recipients

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = 86400.0  # SURFACE.md: an Idempotency-Key is kept for 24 h
_WAITING = (State.QUEUED.value, State.DEFERRED.value)
m, r, c = messages.c, recipients.c, channels.c


def _channel_open(now: Instant | sa.BindParameter[float]) -> sa.ColumnElement[bool]:
    return sa.and_(
        c.state == ChannelState.ACTIVE.value,
        sa.or_(c.throttled_until.is_(None), c.throttled_until <= now),
        sa.or_(c.budget_wait_until.is_(None), c.budget_wait_until <= now),
    )


def _earliest(state: State, column: sa.ColumnElement[Any]) -> Any:
    """A channel's earliest `column` among its messages in `state` (read off the claim
    index)."""
    return (
        sa.select(sa.func.min(column))
        .where(m.channel_id == c.id, m.state == state.value)
        .scalar_subquery()
    )


# The dispatcher's look (serve wakes it after every intake's commit; a worker looks every
# second anyway): its two statements built once, the time bound at execution. Built anew per
# call, building and keying them took about three times as long as running them on SQLite
# (the look's CPU 3.1 ms built per call, 0.83 ms built once: docs/benchmarks.md, branch
# `look`, session 12).
_NOW = sa.bindparam("now", type_=Time)
_CHANNELS_DUE = (
    sa.select(c.id)
    .where(
        _channel_open(_NOW),
        sa.or_(
            _earliest(State.QUEUED, m.next_attempt_at) <= _NOW,
            _earliest(State.DEFERRED, m.next_attempt_at) <= _NOW,
            _earliest(State.SENDING, m.lease_expires_at) <= _NOW,
        ),
    )
    .order_by(c.id)
)
_NEXT_DUE = sa.select(
    c.throttled_until,
    c.budget_wait_until,
    _earliest(State.QUEUED, m.next_attempt_at),
    _earliest(State.DEFERRED, m.next_attempt_at),
    _earliest(State.SENDING, m.lease_expires_at),
).where(c.state == ChannelState.ACTIVE.value)


class OutboxStore:
    """Intake and lease methods of the Store port."""

    _db: Database
    _lost_claims: LostClaims  # PostgreSQL's claims whose answers were lost

    def add_messages(self, msgs: Sequence[NewMessage]) -> list[tuple[str, bool]]:
        """Insert the messages and their recipients (each in the message's state, due at
        created_at), all in one transaction committed before returning.

        Returns (message id, created) per message, in order. A message whose idempotency key
        its user used in the last 24 h is not inserted (keys are kept per user): with the same
        request hash the earlier message's id comes back with created=False; with another,
        Conflict is raised and nothing is inserted. Older keys are forgotten (cleared on the
        earlier message).
        """
        if not msgs:
            return []
        results = [(x.id, True) for x in msgs]
        with self._db.write(conflict=CONFLICT, intake=True) as conn:
            seen = _known_keys(conn, msgs)  # no statement when no message has a key
            fresh: list[NewMessage] = []
            for i, msg in enumerate(msgs):
                earlier = _match_key(seen, msg)
                if earlier is not None:
                    results[i] = (earlier, False)
                    continue
                if msg.idempotency_key is not None:
                    seen[(msg.user_id, msg.idempotency_key)] = (msg.id, msg.request_hash)
                fresh.append(msg)
            insert_group(conn, fresh)
        return results

    def add_leased(self, msg: NewMessage, *, worker: str, lease_until: Instant) -> Claim:
        """Insert one message already claimed by `worker` (state `sending`, leased until
        `lease_until`) and return its claim: a test message, sent at once by the tester and
        settled with `record_attempts` like any attempt. Its transaction starts at once, so it
        is marked started: should the tester die, the lease runs out and a dispatcher sends it
        flagged possible_duplicate."""
        leased = replace(msg, state=State.SENDING)
        with self._db.write(conflict="a message id is already in use") as conn:
            [seq] = insert_group(conn, [leased])
            conn.execute(
                messages.update()
                .where(m.seq == seq)
                .values(lease_owner=worker, lease_expires_at=lease_until, started_at=msg.created_at)
            )
            return read_claims(conn, [seq], worker)[0]

    def channels_due(self, now: Instant) -> list[str]:
        """Ids of active, unthrottled channels with at least one claimable message. Each
        state's earliest due time is a min() that both databases read off the claim index
        (one row each), so a backlog that is not due, or years of history, is never walked."""
        with self._db.read() as conn:
            return [str(cid) for cid in conn.execute(_CHANNELS_DUE, {"now": now}).scalars()]

    def next_due_at(self) -> Instant | None:
        """When the next message of an active channel becomes claimable: its next attempt time
        (or the lease expiry of a message being sent), but not before its channel's throttle
        ends. None when nothing is waiting."""
        with self._db.read() as conn:
            rows = conn.execute(_NEXT_DUE).all()
        times: list[Instant] = []
        for throttled_until, budget_wait_until, *candidates in rows:
            waiting = [t for t in candidates if t is not None]
            if waiting:
                times.append(max(min(waiting), throttled_until or 0.0, budget_wait_until or 0.0))
        return min(times) if times else None

    def claim(
        self, *, channel_id: str, now: Instant, limit: int, lease_until: Instant, worker: str
    ) -> list[Claim]:
        """Lease up to `limit` claimable messages of the channel to `worker`, oldest due first
        (next_attempt_at, then submission order; of the leases run out, the `limit` that ran
        out first compete, as their index gives them): they and their unfinished recipients
        become `sending`, with lease_owner = worker and lease_expires_at = lease_until. A message
        taken over from an expired lease is flagged possible_duplicate when its transaction
        had started (`mark_started`), not when it was merely claimed.

        Returns nothing when the channel is not active or is throttled. Atomic across
        processes. On PostgreSQL one statement in autocommit (FOR UPDATE SKIP LOCKED; the
        claims come back with it: store/claims_pg.py). On SQLite the messages are chosen in a
        read snapshot, leased under the write lock by an UPDATE that checks each is still
        claimable (`_lease_chosen`, store/claim_sqlite.py), and their rows, recipients and
        contents read after the commit, in a read transaction: nothing but their worker
        changes leased messages.
        """
        if limit < 1:
            return []
        lease = Lease(worker, channel_id, now, lease_until)
        if self._db.dialect == "postgresql":  # one statement: store/claims_pg.py
            return self._claim_in_one(lease, limit)
        seqs = self._lease_chosen(lease, limit)
        return self._read_claims(seqs, worker, now) if seqs else []

    def _claim_in_one(self, lease: Lease, limit: int) -> list[Claim]:
        """PostgreSQL: the claim's one statement, under a number of its own (`lease_id`).
        Should it fail once connected, the connection may have dropped after the server
        committed it, or while it still runs it: the messages leased under that number are
        given back right after, and again before each later claim until the claim is seen
        committed or its lease has run out (store/give_backs.py). Those of earlier such claims
        go first; a give-back that cannot run fails no claim (it is tried again)."""
        self._give_back_lost(lease.now)
        lease_id = secrets.randbits(63)
        connected = answered = False
        try:
            with self._db.write_one() as conn:
                connected = True  # from here on the statement may reach the server
                try:
                    return claim_leased(
                        conn,
                        channel_id=lease.channel_id,
                        now=lease.now,
                        limit=limit,
                        lease_until=lease.until,
                        worker=lease.worker,
                        lease_id=lease_id,
                    )
                except sa.exc.DBAPIError as exc:  # the server's own error: nothing leased
                    answered = not exc.connection_invalidated
                    raise
        except StoreUnavailable:
            # A refused connection sent nothing, an error the server answered (a statement
            # timeout, a deadlock) leased nothing: nothing to give back in either case.
            if connected and not answered:
                self._lost_claims.add(lease.worker, lease_id, lease.until)
                self._give_back_lost(lease.now)
            raise

    def _give_back_lost(self, now: Instant) -> None:
        """Give back the messages of this store's claims whose answers were lost (none: no
        statement). The database out of reach, they are kept for the next try, logged."""
        if not self._lost_claims:
            return
        lost = again = self._lost_claims.take(now)
        if not lost:  # their leases have run out: claimable by anyone
            return
        try:
            with self._db.write() as conn:
                count, left = give_back_lost(conn, lost, now)
            again = left  # committed: those seen committed are done
        except StoreUnavailable:
            log.warning("%d lost claim(s) not given back yet: tried again later", len(lost))
            return
        finally:
            self._lost_claims.keep(again)
        if count:
            log.warning("a claim's answer was lost: the %d message(s) it leased given back", count)

    def _lease_chosen(self, lease: Lease, limit: int) -> list[int]:
        """SQLite: choose up to `limit` messages in a read snapshot, outside the write lock
        (an intake waits for no selection), then lease those still claimable under it
        (store/claim_sqlite.py). When another process took some meanwhile, the claim chooses
        again under the lock, as many as it lacks: it comes back as full as one made wholly
        under the lock. The seqs leased, in claim order (their rows are read after the
        commit, with their recipients and contents)."""
        with self._db.read() as conn:
            chosen = _claimable(conn, lease.channel_id, lease.now, limit)
        if not chosen:
            return []
        with self._db.write() as conn:
            seqs = lease_still_claimable(conn, [seq for _, seq in chosen], lease)
            if len(seqs) < len(chosen):
                more = _claimable(conn, lease.channel_id, lease.now, limit - len(seqs))
                seqs += lease_still_claimable(conn, [seq for _, seq in more], lease)
                due = {seq: at for at, seq in (*chosen, *more)}
                seqs.sort(key=lambda seq: (due[seq], seq))  # oldest due first, as one choice
            recipients_sending(conn, seqs, lease.now)
        return seqs

    def _read_claims(self, seqs: list[int], worker: str, now: Instant) -> list[Claim]:
        """The leased messages' claims, read after the lease's commit; should the read fail,
        the messages are given back."""
        try:
            with self._db.read() as conn:
                return read_claims(conn, seqs, worker)
        except StoreUnavailable:
            self._give_back_unread(seqs, worker, now)
            raise

    def _give_back_unread(self, seqs: list[int], worker: str, now: Instant) -> None:
        """The claim's read failed after its lease committed: the worker never learns of
        these messages, so give them back now (best effort) rather than leave them leased
        until their lease runs out. None had started: no possible_duplicate."""
        try:
            with self._db.write() as conn:
                for part in chunks(seqs):
                    give_back(conn, worker, among(m.seq, part), State.QUEUED, now)
        except StoreUnavailable:
            log.warning(
                "claimed %d message(s) could not be given back: due at lease end", len(seqs)
            )

    def unclaim(self, claims: Sequence[Claim], *, state: State, now: Instant) -> None:
        """Give claimed messages back unsent: they and their `sending` recipients become
        `state` (queued, deferred or held), lease cleared, and due when they were, or now if
        that was later: mail given back keeps its place in the queue. Only messages still
        leased to the claim's worker change (one re-claimed after its lease expired is left
        alone)."""
        if State(state) not in (State.QUEUED, State.DEFERRED, State.HELD):
            raise InvalidInput(f"unclaim: cannot put messages back as {state}")
        by_worker: dict[str, list[int]] = defaultdict(list)
        for claim in claims:
            by_worker[claim.worker].append(claim.seq)
        with self._db.write() as conn:
            for worker, seqs in by_worker.items():
                for part in chunks(seqs):
                    give_back(conn, worker, among(m.seq, part), State(state), now)


def _known_keys(
    conn: sa.Connection, msgs: Sequence[NewMessage]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """The users' live idempotency keys among these messages' keys, after forgetting keys
    older than the window; by (user id, key)."""
    wanted = {(x.user_id, x.idempotency_key) for x in msgs if x.idempotency_key is not None}
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    horizon = min(x.created_at for x in msgs) - IDEMPOTENCY_WINDOW
    for user_id in {user for user, _ in wanted}:
        keys = sorted(key for user, key in wanted if user == user_id)
        for part in chunks(keys):
            scope = sa.and_(m.user_id == user_id, m.idempotency_key.in_(part))
            conn.execute(
                messages.update()
                .where(scope, m.created_at < horizon)
                .values(idempotency_key=None, request_hash=None)
            )
            rows = conn.execute(sa.select(m.idempotency_key, m.id, m.request_hash).where(scope))
            for key, message_id, request_hash in rows:
                found[(user_id, key)] = (message_id, request_hash)
    return found


def _match_key(seen: dict[tuple[str, str], tuple[str, str | None]], msg: NewMessage) -> str | None:
    if msg.idempotency_key is None:
        return None
    earlier = seen.get((msg.user_id, msg.idempotency_key))
    if earlier is None:
        return None
    if earlier[1] != msg.request_hash:
        raise Conflict(
            f"idempotency key {msg.idempotency_key!r} was already used with another request"
        )
    return earlier[0]


def _claimable(
    conn: sa.Connection, channel_id: str, now: Instant, limit: int
) -> list[tuple[float, int]]:
    """The messages to claim, oldest due first, as (due, seq) (SQLite: chosen in a read
    snapshot, or under the write lock for what another claim took meanwhile). One query per
    state keeps each on the index."""
    channel = conn.execute(sa.select(c.id).where(c.id == channel_id, _channel_open(now))).first()
    if channel is None:
        return []
    candidates: list[tuple[float, int]] = []
    picks = [
        (State.QUEUED, m.next_attempt_at, m.next_attempt_at),
        (State.DEFERRED, m.next_attempt_at, m.next_attempt_at),
        (State.SENDING, m.lease_expires_at, sa.func.coalesce(m.next_attempt_at, 0.0)),
    ]
    for state, due, order in picks:
        query = (
            sa.select(order, m.seq)
            .where(m.channel_id == channel_id, m.state == state.value, due <= now)
            .order_by(due, m.seq)
            .limit(limit)
        )
        candidates.extend((float(at), int(seq)) for at, seq in conn.execute(query))
    candidates.sort()
    return candidates[:limit]
