"""The submission port's group commit reads in one transaction: the trusted network's senders
and the routes share one snapshot (on PostgreSQL each read transaction is a BEGIN and a COMMIT,
two round trips), and the commit comes after it, in its own write transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailvia.domain.channel import Auth, Security
from mailvia.domain.errors import Forbidden
from mailvia.domain.message import Envelope, State
from mailvia.ingress.smtp.intake import Arrived, Intake
from mailvia.outbox.submit import Receipt
from support.world import World

RAW = (
    b"From: Jane <jane@acme.test>\r\nTo: bob@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m@acme.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n"
)


async def test_a_group_reads_its_senders_and_routes_in_one_transaction(tmp_path: Path) -> None:
    world = World(tmp_path / "data")
    try:
        world.channel(9, security=Security.NONE, auth=Auth.NONE)
        store = world.store
        snapshot = store.snapshot
        depth, outermost, writes_inside = [0], [0], [0]
        add_messages = store.add_messages

        @contextmanager
        def counted() -> Iterator[None]:
            depth[0] += 1
            outermost[0] += depth[0] == 1
            try:
                with snapshot():
                    yield
            finally:
                depth[0] -= 1

        def add(msgs):  # type: ignore[no-untyped-def]
            writes_inside[0] += depth[0] > 0
            return add_messages(msgs)

        store.snapshot = counted  # type: ignore[method-assign]
        store.add_messages = add  # type: ignore[method-assign]
        intake = Intake(world.services, time.time)
        receipts = intake.commit(_arrived(world, intake, RAW, 3))
        assert all(isinstance(r, Receipt) and r.state is State.QUEUED for r in receipts)
        assert outermost[0] == 1  # senders and routes: one read transaction
        assert writes_inside[0] == 0  # the commit after it
        counts = store.queue_counts(world.jane.organization_id)
        assert [c[State.QUEUED] for c in counts.values()] == [3]
    finally:
        await world.close()


async def test_a_group_looks_its_trusted_sender_up_once_and_reads_no_forecast(
    tmp_path: Path,
) -> None:
    """The trusted network's sender found for a From is that From's right: the route does
    not look the domain and identities up again; and the 250 tells no forecast, so the
    channel's backlog is not counted. A Sender header of someone else is still checked."""
    world = World(tmp_path / "data")
    try:
        world.channel(9, security=Security.NONE, auth=Auth.NONE)
        store = world.store
        calls: dict[str, int] = {}
        for name in ("domain_organization", "identities", "senders_for", "waiting_count"):
            original = getattr(store, name)

            def counted(*args, _name=name, _original=original):  # type: ignore[no-untyped-def]
                calls[_name] = calls.get(_name, 0) + 1
                return _original(*args)

            setattr(store, name, counted)
        intake = Intake(world.services, time.time)
        receipts = intake.commit(_arrived(world, intake, RAW, 3))
        assert all(isinstance(r, Receipt) and r.state is State.QUEUED for r in receipts)
        assert calls == {"domain_organization": 1, "senders_for": 1}

        on_behalf = RAW.replace(b"Subject:", b"Sender: eve@elsewhere.test\r\nSubject:")
        calls.clear()
        [refused] = intake.commit(_arrived(world, intake, on_behalf, 1))
        assert isinstance(refused, Forbidden) and "Sender header" in str(refused)
    finally:
        await world.close()


def _arrived(world: World, intake: Intake, raw: bytes, count: int) -> list[Arrived]:
    """`count` copies of `raw` from jane to bob, as the submission port hands them over."""
    envelope = Envelope("jane@acme.test", ("bob@example.com",))
    org = world.jane.organization_id
    return [Arrived(intake.compose(raw, envelope), None, org) for _ in range(count)]
