"""The claim's rule is written several times, each where it runs (docs/architecture.md, "A claim
chooses before it locks"): SQLAlchemy's choice (`outbox._claimable`, `_channel_open`), SQLite's
leasing UPDATE (`claim_sqlite._STILL_CLAIMABLE`), PostgreSQL's one statement
(`claims_pg._CLAIM`) and the due channels' query (`OutboxStore.channels_due`); and the memory
store's claim and due channels. The tests of each gate check them one by one; this one checks
that they agree with each other.

It makes random states (seeded, reproducible: MAILVIA_RULE_SEED), the same on SQLite and on
PostgreSQL: messages of several channels in every state, due, leased, started, their times in
the past, at the boundary (now) and in the future, owned by several workers, some channels
sparse (most of their messages due or leased until later, so that whether the channel is due
often rests on one message); channels active,
paused, disconnected, throttled or waiting for their budget. For each channel it asks every
writing which messages are claimable now (the leasing UPDATE and PostgreSQL's statement in a
transaction rolled back), and which first under a random limit (the choice and the statement,
oldest due first), and requires one answer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import ChannelState
from mailvia.domain.message import State
from mailvia.store import SqlStore
from mailvia.store.claim_sqlite import Lease, lease_still_claimable
from mailvia.store.claims_pg import claim_leased
from mailvia.store.memory import MemoryStore
from mailvia.store.outbox import _claimable
from mailvia.store.tables import channels, messages
from support.rows import T0, channel, new, seeded

pytestmark = pytest.mark.postgres

SEED = int(os.environ.get("MAILVIA_RULE_SEED", "20261207"))
ROUNDS = int(os.environ.get("MAILVIA_RULE_ROUNDS", "60"))
CHANNELS = ("ch_0", "ch_1", "ch_2", "ch_3")
PER_CHANNEL = 16
NOW = T0 + 1000
# Times around the boundary: every comparison is `<= now`, so `now` itself matters.
TIMES = (NOW - 500, NOW - 1, NOW, NOW + 1, NOW + 500)
WORKERS = ("w1", "w2", "w3")
EVERY = 10_000  # a limit above any channel's mail
m, c = messages.c, channels.c


@dataclass(frozen=True)
class World:
    """One random state: each channel's columns, each message's."""

    channels: list[dict[str, Any]]
    messages: list[dict[str, Any]]


# A channel's share of messages that may be claimable now (the others finished, or due or
# leased until later): a sparse channel's being due often rests on one message.
DENSITIES = (1.0, 0.5, 0.15, 0.05)
LATER = (NOW + 1, NOW + 500)


def _maybe(rng: random.Random, chance: float, times: tuple[float, ...] = TIMES) -> float | None:
    return rng.choice(times) if rng.random() < chance else None


def _channel_row(rng: random.Random, channel_id: str) -> dict[str, Any]:
    states = [ChannelState.ACTIVE] * 4 + [ChannelState.PAUSED, ChannelState.DISCONNECTED]
    return {
        "cid": channel_id,
        "state": rng.choice(states).value,
        "throttled_until": _maybe(rng, 0.3),
        "budget_wait_until": _maybe(rng, 0.3),
    }


def _message_row(rng: random.Random, message_id: str, density: float) -> dict[str, Any]:
    """A message in any state. A `sending` one is always leased (an owner and an end); the
    others mostly not, but now and then with a lease's leftovers, which must not count.
    Beyond the channel's `density`, its times all later than now (never claimable now)."""
    state = rng.choice([*State, State.QUEUED, State.DEFERRED, State.SENDING, State.SENDING])
    leased = state is State.SENDING or rng.random() < 0.2
    times = TIMES if rng.random() < density else LATER
    return {
        "mid": message_id,
        "state": state.value,
        "next_attempt_at": _maybe(
            rng, 1.0 if state in (State.QUEUED, State.DEFERRED) else 0.7, times
        ),
        "lease_owner": rng.choice(WORKERS) if leased else None,
        "lease_expires_at": rng.choice(times) if leased else None,
        "started_at": _maybe(rng, 0.4) if leased else None,
    }


def _world(rng: random.Random, ids: list[str]) -> World:
    density = {channel_id: rng.choice(DENSITIES) for channel_id in CHANNELS}
    return World(
        [_channel_row(rng, channel_id) for channel_id in CHANNELS],
        [_message_row(rng, mid, density.get(mid.split(".")[0], 1.0)) for mid in ids],
    )


def _apply(store: SqlStore, world: World) -> None:
    with store._db.write() as conn:
        conn.execute(
            channels.update()
            .where(c.id == sa.bindparam("cid"))
            .values(
                state=sa.bindparam("state"),
                throttled_until=sa.bindparam("throttled_until"),
                budget_wait_until=sa.bindparam("budget_wait_until"),
            ),
            world.channels,
        )
        conn.execute(
            messages.update()
            .where(m.id == sa.bindparam("mid"))
            .values(
                state=sa.bindparam("state"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                lease_owner=sa.bindparam("lease_owner"),
                lease_expires_at=sa.bindparam("lease_expires_at"),
                started_at=sa.bindparam("started_at"),
            ),
            world.messages,
        )


Store = tuple[SqlStore, dict[int, str]]  # a store and its messages' ids by seq


@pytest.fixture
def stores(tmp_path: Path, pg_url: str) -> Iterator[tuple[Store, Store, MemoryStore]]:
    """A SQLite store, a PostgreSQL store and a memory store with the same channels and
    messages (a few on a channel with no row: never claimable)."""
    made = [channel(channel_id, channel_id) for channel_id in CHANNELS]
    lite, pg = seeded(f"sqlite:///{tmp_path / 'rule.db'}", *made), seeded(pg_url, *made)
    mail = [new(f"{ch}.{i}", ch=ch) for ch in CHANNELS for i in range(PER_CHANNEL)]
    mail += [new(f"ch_gone.{i}", ch="ch_gone") for i in range(3)]
    both = []
    for store in (lite, pg):
        store.add_messages(mail)
        with store._db.read() as conn:
            both.append((store, dict(conn.execute(sa.select(m.seq, m.id)).all())))
    yield both[0], both[1], _memory(mail)
    lite.close()
    pg.close()


def _memory(mail: list[Any]) -> MemoryStore:
    """The memory store with the same channels and messages."""
    store = MemoryStore()
    store.create_organization("org_1", "acme", T0)
    for channel_id in CHANNELS:
        store.add_channel(channel(channel_id, channel_id), None, T0)
    store.add_messages(mail)
    return store


def _apply_in_memory(store: MemoryStore, world: World) -> None:
    """The world's columns set on the memory store's objects (its indexes kept)."""
    d = store._d
    for row in world.channels:
        shut = {"state": ChannelState(row["state"]), "throttled_until": row["throttled_until"]}
        d.channels[row["cid"]] = replace(d.channels[row["cid"]], **shut)
        d.budget_wait.pop(row["cid"], None)
        if row["budget_wait_until"] is not None:
            d.budget_wait[row["cid"]] = row["budget_wait_until"]
    for row in world.messages:
        msg = d.messages[d.by_id[row["mid"]]]
        d.unindex(msg)
        msg.state = State(row["state"])
        msg.next_attempt_at, msg.started_at = row["next_attempt_at"], row["started_at"]
        msg.lease_owner, msg.lease_expires_at = row["lease_owner"], row["lease_expires_at"]
        d.reindex(msg)


def _memory_claim(store: MemoryStore, world: World, channel_id: str, limit: int) -> list[str]:
    """The memory store's claim, its effects undone (the world set again)."""
    claims = store.claim(
        channel_id=channel_id, now=NOW, limit=limit, lease_until=NOW + 30, worker="probe"
    )
    _apply_in_memory(store, world)
    return [claim.message_id for claim in claims]


@contextmanager
def _undone(conn: sa.Connection) -> Iterator[sa.Connection]:
    """A savepoint in the round's probing transaction, rolled back at the end."""
    savepoint = conn.begin_nested()
    try:
        yield conn
    finally:
        savepoint.rollback()


def _choice(store: SqlStore, ids: dict[int, str], channel_id: str, limit: int) -> list[str]:
    """SQLAlchemy's choice (`outbox._claimable`), oldest due first (in the round's snapshot)."""
    with store._db.read() as conn:
        return [ids[seq] for _, seq in _claimable(conn, channel_id, NOW, limit)]


def _still_claimable(probe: sa.Connection, ids: dict[int, str], channel_id: str) -> list[str]:
    """SQLite's leasing UPDATE offered every message (of every channel), rolled back."""
    with _undone(probe) as conn:
        leased = lease_still_claimable(conn, sorted(ids), Lease("probe", channel_id, NOW, NOW + 30))
    return [ids[seq] for seq in leased]


def _statement(probe: sa.Connection, channel_id: str, limit: int) -> list[str]:
    """PostgreSQL's claim statement, rolled back, oldest due first."""
    with _undone(probe) as conn:
        claims = claim_leased(
            conn,
            channel_id=channel_id,
            now=NOW,
            limit=limit,
            lease_until=NOW + 30,
            worker="probe",
            lease_id=1,
        )
    return [claim.message_id for claim in claims]


def _answers(
    lite: Store, pg: Store, probes: list[sa.Connection], channel_id: str, limit: int
) -> dict[str, Any]:
    """Every SQL writing's answer for one channel: which are claimable (as sets) and which
    come first under `limit` (in order)."""
    return {
        "claimable": {
            "choice (SQLite)": sorted(_choice(*lite, channel_id, EVERY)),
            "choice (PostgreSQL)": sorted(_choice(*pg, channel_id, EVERY)),
            "leasing UPDATE (SQLite)": sorted(_still_claimable(probes[0], lite[1], channel_id)),
            "one statement (PostgreSQL)": sorted(_statement(probes[1], channel_id, EVERY)),
        },
        "first": {
            "choice (SQLite)": _choice(*lite, channel_id, limit),
            "choice (PostgreSQL)": _choice(*pg, channel_id, limit),
            "one statement (PostgreSQL)": _statement(probes[1], channel_id, limit),
        },
    }


def _memory_answers(
    answers: dict[str, Any], memory: MemoryStore, world: World, channel_id: str, limit: int
) -> None:
    """The memory store's answers added: its claim (undone) and its due channels."""
    claimable = sorted(_memory_claim(memory, world, channel_id, EVERY))
    answers["claimable"]["memory store"] = claimable
    answers["first"]["memory store"] = _memory_claim(memory, world, channel_id, limit)
    answers["due"]["channels_due (memory)"] = channel_id in memory.channels_due(NOW)


def _disagreements(answers: dict[str, Any]) -> list[str]:
    found = []
    for question, by_writing in answers.items():
        if len({repr(answer) for answer in by_writing.values()}) > 1:
            found.append(f"{question}: {by_writing}")
    claimable = next(iter(answers["claimable"].values()))
    if any(due != bool(claimable) for due in answers["due"].values()):
        found.append(f"due {answers['due']} but claimable {claimable}")
    return found


def test_every_writing_of_the_claims_rule_picks_the_same_messages(
    stores: tuple[Store, Store, MemoryStore],
) -> None:
    lite, pg, memory = stores
    rng = random.Random(SEED)
    seen_claimable = seen_shut = 0
    for number in range(ROUNDS):
        world = _world(rng, sorted(lite[1].values()))
        _apply_in_memory(memory, world)
        with ExitStack() as round_:
            probes = []  # a transaction each, where the leasing statements are rolled back
            for store, _ in (lite, pg):
                _apply(store, world)
                round_.enter_context(store._db.snapshot())  # the round's reads: one each
                probes.append(round_.enter_context(store._db.engine.connect()))
                round_.enter_context(probes[-1].begin())
            due = {"SQLite": lite[0].channels_due(NOW), "PostgreSQL": pg[0].channels_due(NOW)}
            for channel_id in CHANNELS:
                limit = rng.randint(1, 4)
                answers = _answers(lite, pg, probes, channel_id, limit)
                answers["due"] = {f"channels_due ({db})": channel_id in d for db, d in due.items()}
                _memory_answers(answers, memory, world, channel_id, limit)
                found = _disagreements(answers)
                assert not found, f"seed {SEED}, round {number}, channel {channel_id}: {found}"
                if answers["claimable"]["choice (SQLite)"]:
                    seen_claimable += 1
                else:
                    seen_shut += 1
    # The states were varied enough to mean something: both answers were common.
    assert seen_claimable > ROUNDS and seen_shut > ROUNDS // 2
