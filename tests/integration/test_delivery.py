"""End to end through the dispatcher: the real store, the real transport, the real test
server on 127.0.0.1. Time is driven with run_once(SteppingClock(now)); nothing sleeps for work."""

from __future__ import annotations

import asyncio
import email
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox import run_claims
from mailvia.outbox.ports import Claim, Credentials
from mailvia.testserver import TestServer
from support.transports import QuietTransport
from support.world import Certs, World, make_certs

OK = Reply(250, "2.0.0", "OK")


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "data")
    yield w
    await w.close()


def tls_server(certs: Certs, tmp_path: Path, **kw: object) -> TestServer:
    return TestServer(
        tls_cert=certs.cert,
        tls_key=certs.key,
        auth={"jane": "secret"},
        maildir=tmp_path / "caught",
        **kw,
    )  # type: ignore[arg-type]


async def drain(world: World, now: float, passes: int = 50) -> int:
    total = 0
    for _ in range(passes):
        done = await world.services.dispatcher.run_once(SteppingClock(now))
        total += done
        if done == 0:
            break
    return total


async def test_hundred_messages_over_starttls_and_auth_arrive_intact(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    async with tls_server(certs, tmp_path) as server:
        world.channel(server.port, certs=certs)
        receipts = world.send(count=100, to=("bob@example.com", "carol@example.net"))
        assert await drain(world, time.time()) == 100
        got = await server.wait_for(100)
    assert len(got) == 100
    for entry in got:
        assert entry["mail_from"] == "jane@acme.test"
        assert entry["rcpt_to"] == ["bob@example.com", "carol@example.net"]
        assert entry["sha256"] == hashlib.sha256(entry["content"]).hexdigest()
    subjects = sorted(email.message_from_bytes(e["content"])["Subject"] for e in got)
    assert subjects == sorted(f"hello {i}" for i in range(100))
    for receipt in receipts:
        view = world.store.get_message(receipt.id)
        assert view.state is State.DELIVERED
        assert {r.state for r in view.recipients} == {State.DELIVERED}
    # Body and headers arrive byte for byte as submitted (mailvia adds no trace headers).
    assert sorted(e["content"] for e in got) == sorted(world.sent[r.id] for r in receipts)
    sessions = [s for s in server.sessions if "MAIL" in s["commands"]]
    assert all(s["tls"] and s["auth_user"] == "jane" for s in sessions)
    assert len(sessions) <= 5  # connections are reused (max_connections defaults to 5)


async def test_temporary_rcpt_failure_then_success_on_retry(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    async with tls_server(certs, tmp_path, faults=["rcpt*1=451 4.3.0 Try again later"]) as server:
        world.channel(server.port, certs=certs)
        [receipt] = world.send()
        now = time.time()
        assert await world.services.dispatcher.run_once(SteppingClock(now)) == 1
        view = world.store.get_message(receipt.id)
        assert view.state is State.DEFERRED
        assert view.next_attempt_at is not None and now + 239 < view.next_attempt_at < now + 361
        assert (
            await world.services.dispatcher.run_once(SteppingClock(now + 100)) == 0
        )  # not yet due
        assert await world.services.dispatcher.run_once(SteppingClock(now + 400)) == 1
        await server.wait_for(1)
    view = world.store.get_message(receipt.id)
    assert view.state is State.DELIVERED
    outcomes = [(a.outcome, a.reply.code, a.reply.enhanced) for a in view.attempts]
    assert outcomes[0] == ("retry", 451, "4.3.0") and outcomes[1][:2] == ("delivered", 250)


async def test_one_permanent_rcpt_failure_bounces_only_that_recipient(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    async with tls_server(certs, tmp_path) as server:
        world.channel(server.port, certs=certs)
        [receipt] = world.send(to=("permfail@example.com", "ok@example.com"))
        await drain(world, time.time())
        [got] = await server.wait_for(1)
    assert got["rcpt_to"] == ["ok@example.com"]
    view = world.store.get_message(receipt.id)
    assert view.state is State.DELIVERED
    states = {r.address: (r.state, r.reply.code if r.reply else None) for r in view.recipients}
    assert states == {
        "permfail@example.com": (State.BOUNCED, 550),
        "ok@example.com": (State.DELIVERED, 250),
    }
    bounced = next(r for r in view.recipients if r.address.startswith("permfail"))
    assert bounced.reply is not None and bounced.reply.enhanced == "5.1.1"


async def test_connection_dropped_mid_data_is_retried_and_delivered_once(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    async with tls_server(certs, tmp_path, faults=["data*1=drop"]) as server:
        world.channel(server.port, certs=certs)
        # Large enough that the server hangs up while the body is still being sent.
        [receipt] = world.send(text="x" * 70 + "\n" * 40_000 + "y" * 60_000)
        now = time.time()
        await world.services.dispatcher.run_once(SteppingClock(now))
        view = world.store.get_message(receipt.id)
        assert view.state is State.DEFERRED and not view.possible_duplicate
        assert view.attempts[0].reply.code == 451
        await world.services.dispatcher.run_once(SteppingClock(now + 400))
        await server.wait_for(1)
        assert len(server.received) == 1
    assert world.store.get_message(receipt.id).state is State.DELIVERED


async def test_timeout_after_the_final_dot_is_retried_and_flagged(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    from mailvia.domain.channel import Timeouts

    quick = Timeouts(connect=5, greeting=5, command=5, data_init=5, data_block=5, data_end=0.5)
    async with tls_server(certs, tmp_path, faults=["data-end*1=stall:2"]) as server:
        world.channel(server.port, certs=certs, timeouts=quick)
        [receipt] = world.send()
        now = time.time()
        await world.services.dispatcher.run_once(SteppingClock(now))
        view = world.store.get_message(receipt.id)
        assert view.state is State.DEFERRED and view.possible_duplicate
        await server.wait_for(1)  # the server did take it, after the client gave up
        await world.services.dispatcher.run_once(SteppingClock(now + 400))
        await server.wait_for(2)
    view = world.store.get_message(receipt.id)
    assert view.state is State.DELIVERED and view.possible_duplicate


async def test_starttls_required_but_not_offered_sends_nothing(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    async with tls_server(certs, tmp_path, starttls=False) as server:
        channel = world.channel(server.port, certs=certs)
        [receipt] = world.send()
        await world.services.dispatcher.run_once(time.time)
        commands = [c for s in server.sessions for c in s["commands"]]
    assert "AUTH" not in commands and "MAIL" not in commands
    view = world.store.get_message(receipt.id)
    assert view.state is State.HELD
    assert "STARTTLS" in view.attempts[0].reply.text
    assert view.attempts[0].stage == "starttls"
    assert world.store.get_channel(channel.id).state is ChannelState.DISCONNECTED


async def test_certificate_for_another_host_name_is_refused(world: World, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other", "mail.other.test")
    async with tls_server(other, tmp_path) as server:
        world.channel(server.port, certs=other)
        [receipt] = world.send()
        await world.services.dispatcher.run_once(time.time)
        commands = [c for s in server.sessions for c in s["commands"]]
    assert "AUTH" not in commands and "MAIL" not in commands
    view = world.store.get_message(receipt.id)
    assert view.state is State.HELD and "certificate" in view.attempts[0].reply.text


async def test_dot_lines_in_the_body_never_end_data_early(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    body = (
        b"From: jane@acme.test\r\nTo: bob@example.com\r\nSubject: dots\r\n\r\n"
        b"one\n.\ntwo\r\n.\r\nthree\r.\rfour\r\n..\r\nend\r\n"
    )
    async with tls_server(certs, tmp_path) as server:
        world.channel(server.port, certs=certs)
        receipt = world.submit_raw(body, ["bob@example.com"])
        await drain(world, time.time())
        [got] = await server.wait_for(1)
        sessions = [s for s in server.sessions if "DATA" in s["commands"]]
    assert sum(s["commands"].count("DATA") for s in sessions) == 1
    assert got["content"].endswith(b"one\r\n.\r\ntwo\r\n.\r\nthree\r\n.\r\nfour\r\n..\r\nend\r\n")
    assert world.store.get_message(receipt.id).state is State.DELIVERED


async def test_a_crashed_dispatchers_lease_expires_and_mail_is_claimed_again(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """A dead worker's claims come back when its lease runs out; only the message whose
    transaction it had started (marked before MAIL) is flagged possible_duplicate."""
    async with tls_server(certs, tmp_path) as server:
        channel = world.channel(server.port, certs=certs)
        started, claimed = world.send(count=2)
        now = time.time()
        store = world.store
        claims = store.claim(
            channel_id=channel.id, now=now, limit=10, lease_until=now + 60, worker="crashed"
        )
        assert [c.message_id for c in claims] == [started.id, claimed.id]
        assert store.mark_started([claims[0].seq], "crashed", now) == [True]
        assert (
            await world.services.dispatcher.run_once(SteppingClock(now + 30)) == 0
        )  # lease still held
        assert await world.services.dispatcher.run_once(SteppingClock(now + 61)) == 2
        await server.wait_for(2)
    views = [store.get_message(r.id) for r in (started, claimed)]
    assert [v.state for v in views] == [State.DELIVERED, State.DELIVERED]
    assert [v.possible_duplicate for v in views] == [True, False]


async def test_wrong_password_disconnects_holds_and_notifies_the_owner(
    certs: Certs, tmp_path: Path
) -> None:
    async with (
        tls_server(certs, tmp_path) as server,
        TestServer(maildir=tmp_path / "pool") as pool,
    ):
        world = World(
            tmp_path / "data",
            pool_relay=f"smtp://127.0.0.1:{pool.port}?security=none",
            notice_from="notices@mailvia.test",
        )
        try:
            channel = world.channel(server.port, certs=certs, password="wrong")
            receipts = world.send(count=3)
            now = time.time()
            await world.services.dispatcher.run_once(SteppingClock(now))
            got = world.store.get_channel(channel.id)
            assert got.state is ChannelState.DISCONNECTED and "535" in (got.state_reason or "")
            states = {world.store.get_message(r.id).state for r in receipts}
            assert states == {State.HELD}
            later = world.send()  # new mail to a disconnected channel is held at once
            assert later[0].state is State.HELD and later[0].warnings
            events, _ = world.store.list_events(world.jane.organization_id, cursor=None, limit=100)
            disconnected = [e for e in events if e.type == "channel.disconnected"]
            assert disconnected and disconnected[0].data["held"] == 3
            # The notice goes to the owner through the shared pool; nothing else moves.
            assert await world.services.dispatcher.run_once(SteppingClock(now + 3600)) == 1
            [notice] = await pool.wait_for(1)
            assert notice["rcpt_to"] == ["jane@acme.test"]
            assert b"is disconnected" in notice["content"] and b"535" in notice["content"]
            assert not server.received
        finally:
            await world.close()


async def test_messages_expire_after_the_give_up_time(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    from mailvia.domain.retry import RetryPolicy

    async with tls_server(certs, tmp_path, faults=["rcpt=451 4.3.0 Try again later"]) as server:
        world.channel(
            server.port,
            certs=certs,
            retry=RetryPolicy(first_delay=60, max_delay=60, give_up_after=200),
        )
        [receipt] = world.send()
        now = time.time()
        for step in (0, 70, 140, 210, 300):
            await world.services.dispatcher.run_once(SteppingClock(now + step))
        view = world.store.get_message(receipt.id)
    assert view.state is State.EXPIRED
    assert not server.received


async def test_a_running_dispatcher_expires_held_mail_but_looks_at_most_every_10_s(
    world: World, certs: Certs
) -> None:
    """run_forever's passes come many times a second while mail trickles in; each look for
    expired mail is a write, so it looks again only after EXPIRE_EVERY seconds."""
    from mailvia.domain.retry import RetryPolicy
    from mailvia.outbox.dispatch import EXPIRE_EVERY

    channel = world.channel(9, certs=certs, retry=RetryPolicy(give_up_after=30))
    world.services.channels.pause(world.jane, channel.name, time.time())
    [receipt] = world.send()
    store = world.store
    looks: list[float] = []
    expire_due = store.expire_due
    # type: ignore[method-assign]
    store.expire_due = lambda now, who, **kw: looks.append(now) or expire_due(now, who, **kw)
    start = time.time()
    dispatcher = world.services.dispatcher
    for offset in (0, 1, 5, 9.9, 31, 35, 41.5):
        await dispatcher._start_due(lambda t=start + offset: t, {})
    assert [round(t - start, 1) for t in looks] == [0, 31, 41.5]
    assert EXPIRE_EVERY == 10.0
    assert store.get_message(receipt.id).state is State.EXPIRED


class SteppedTransport(QuietTransport):
    """Accepts every transaction, each taking `seconds` on the stepping clock; after the
    `arrive_after`-th it submits three more messages (mail arriving while a run goes on)."""

    def __init__(self, world: World, clock: SteppingClock, seconds: float, arrive_after: int):
        self.world, self.clock, self.seconds, self.arrive_after = (
            world,
            clock,
            seconds,
            arrive_after,
        )
        self.sent = 0

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        self.clock.advance(self.seconds)
        await asyncio.sleep(0)  # a transaction gives the loop a turn: a claim due goes then
        self.sent += 1
        if self.sent == self.arrive_after:
            self.world.send(count=3, now=self.clock.now)
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_run_claims_more_as_its_queue_runs_low_but_not_again_soon_after_a_short_claim(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run_once: a channel run claims more (refills) when its queue runs low, and after a
    claim that came back short (the outbox is drained) claims again only REFILL_PAUSE later:
    each claim is a write that intake would queue behind. Mail that arrives meanwhile goes
    in the same run."""
    from mailvia.outbox.run_claims import REFILL_PAUSE

    assert REFILL_PAUSE == 0.05
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url, claim_batch=8)  # refills below 8 // 2 = 4

    async def inline(call: Callable[[], Any]) -> Any:
        return call()

    # The claims in the loop, not in a thread: a claim is due and done in the same turn of the
    # loop, however long the store takes (in a thread it came back whenever the machine let
    # it, and the claims below moved), so they are the same on every run.
    monkeypatch.setattr(run_claims, "in_thread", inline)
    try:
        world.channel(9, max_connections=1)
        t0 = time.time()
        world.send(count=17, now=t0)
        clock = SteppingClock(t0)
        # 30 ms a transaction: a short claim's next refill comes 30 ms later (too soon), the
        # one after 60 ms later.
        world.services.dispatcher.transport = SteppedTransport(world, clock, 0.03, 16)
        store = world.store
        claims: list[tuple[float, int]] = []
        claim = store.claim

        def counted(**kw: Any) -> list[Claim]:
            got = claim(**kw)
            claims.append((round(kw["now"] - t0, 3), len(got)))
            return got

        store.claim = counted  # type: ignore[method-assign]
        assert await world.services.dispatcher.run_once(clock) == 20
        # 8 (full), 8 more at 3 left (full, at 0.12 s), the last 1 (short, at 0.36 s); none
        # at 0.39 s; one that finds nothing at 0.42 s; none at 0.45 s; the 3 that arrived at
        # 0.48 s; none again before 0.53 s (empty at 0.54 s).
        assert claims == [(0.0, 8), (0.12, 8), (0.36, 1), (0.42, 0), (0.48, 3), (0.54, 0)]
        counts = store.queue_counts(world.jane.organization_id)
        assert [c[State.DELIVERED] for c in counts.values()] == [20]
    finally:
        await world.close()
