"""The ways out of a wrong channel on the command line: `mailvia channel edit` (tested before
it is saved; exit 1 with the report when the test fails; --no-test saves anyway), `channel
remove --cancel-mail | --move-mail-to`, `channel cancel-mail`, `message cancel`. The real
console script as a subprocess on the world's data folder (the same SQLite store and master
key), a real test SMTP server in a thread, the dispatcher driven in process by `run_once`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, ChannelState, Scope, Security
from mailvia.domain.message import State
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.submit import Submission
from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, require_console_script
from support.ports import closed_port
from support.world import Certs, World, make_certs

ORG = ("--org", "acme")
RIGHT = "Corr3ct-Horse-Battery"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_console_script()
    world = World(tmp_path / "data")
    yield world
    asyncio.run(world.close())


@pytest.fixture
def cli(world: World) -> Cli:
    return Cli(world.settings.data_dir)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def smtp(certs: Certs, tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer(
        "127.0.0.1", 0, tls_cert=certs.cert, tls_key=certs.key, auth={"jane": RIGHT}
    ) as server:
        yield server


def deliver(world: World) -> None:
    asyncio.run(world.services.dispatcher.run_once(time.time))


def state_of(world: World, message_id: str) -> State:
    return world.store.get_message(message_id).state


def test_edit_fixes_a_wrong_port_after_a_test_and_refuses_one_that_fails(
    world: World, cli: Cli, certs: Certs, smtp: ThreadedTestServer
) -> None:
    channel = world.channel(closed_port(), certs=certs, password=RIGHT)
    sent = world.send()[0].id
    deliver(world)
    assert state_of(world, sent) is State.DEFERRED

    refused = cli.run("channel", "edit", "jane-box", "--port", str(closed_port()), *ORG)
    assert refused.code == 1, str(refused)
    assert (
        "✗ connect" in refused.stdout and "not saved: the test failed at connect" in refused.stdout
    )
    assert world.store.get_channel(channel.id).port == channel.port

    fixed = cli.ok("channel", "edit", "jane-box", "--port", str(smtp.port), "--json", *ORG)
    out = fixed.json()
    assert out["saved"] is True and out["test"]["ok"] is True and out["retried"] == 1
    assert out["channel"]["port"] == smtp.port and RIGHT not in fixed.stdout
    deliver(world)
    assert state_of(world, sent) is State.DELIVERED
    assert len(smtp.received) == 1


def test_edit_fixes_the_sign_in_of_a_disconnected_channel_and_releases_its_mail(
    world: World, cli: Cli, certs: Certs, smtp: ThreadedTestServer
) -> None:
    channel = world.channel(smtp.port, certs=certs, auth=Auth.NONE, max_connections=1)
    sent = [r.id for r in world.send(count=2)]
    deliver(world)  # 530: the server needs a sign-in
    assert world.store.get_channel(channel.id).state is ChannelState.DISCONNECTED
    sign_in = ("--auth", "plain", "--username", "jane", "--password-stdin")
    wrong = cli.run("channel", "edit", "jane-box", *sign_in, *ORG, input="wrong\n")
    assert wrong.code == 1 and "535" in wrong.stdout and "wrong" not in wrong.stdout
    fixed = cli.ok("channel", "edit", "jane-box", *sign_in, *ORG, input=RIGHT + "\n")
    assert "saved; reconnected, 2 held messages released" in fixed.stdout
    deliver(world)
    assert [state_of(world, m) for m in sent] == [State.DELIVERED] * 2


def test_edit_without_a_test_and_bad_input(world: World, cli: Cli) -> None:
    channel = world.channel(closed_port())
    saved = cli.ok("channel", "edit", "jane-box", "--host", "localhost", "--no-test", *ORG)
    assert "saved jane-box (active)" in saved.stdout
    assert world.store.get_channel(channel.id).host == "localhost"
    renamed = cli.ok(
        "channel", "edit", "jane-box", "--name", "box2", "--max-connections", "2", *ORG
    )
    assert "saved box2" in renamed.stdout
    for bad in (("--port", "0"), ("--port", "x"), ("--security", "ssl"), ("--colour", "red")):
        assert cli.run("channel", "edit", "box2", *bad, *ORG).code == 2, bad
    clear = ("--security", "none", "--auth", "plain", "--no-test")
    refused = cli.run("channel", "edit", "box2", *clear, *ORG)
    assert refused.code == 2 and "security none" in refused.stderr
    assert cli.run("channel", "edit", "nope", "--name", "x", *ORG).code == 3
    world.services.tenancy.create_org("globex", time.time())
    assert cli.run("channel", "edit", "box2", "--name", "x", "--org", "globex").code == 3


def test_remove_asks_for_a_choice_then_cancels_or_moves_the_mail(world: World, cli: Cli) -> None:
    box = world.channel(closed_port())
    other = world.team_channel(closed_port(), name="other")  # one own channel an address
    sent = [r.id for r in world.send(count=2)]
    asked = cli.run("channel", "remove", "jane-box", *ORG)
    assert asked.code == 4 and "--cancel-mail or --move-mail-to" in asked.stderr
    both = cli.run(
        "channel", "remove", "jane-box", "--cancel-mail", "--move-mail-to", "other", *ORG
    )
    assert both.code == 2
    moved = cli.ok("channel", "remove", "jane-box", "--move-mail-to", "other", *ORG)
    assert "removed jane-box; 0 messages cancelled, 2 moved" in moved.stdout
    assert all(world.store.get_message(m).channel_id == other.id for m in sent)
    assert box.id not in {c.id for c in world.services.channels.visible(world.jane)}
    cancelled = cli.ok("channel", "remove", "other", "--cancel-mail", "--json", *ORG)
    assert cancelled.json() == {"removed": True, "cancelled": 2, "moved": 0, "kept": []}
    assert [state_of(world, m) for m in sent] == [State.CANCELLED] * 2


def test_mail_that_may_not_move_stays_and_is_listed(world: World, cli: Cli) -> None:
    spec = ChannelSpec(
        name="relay",
        host="127.0.0.1",
        port=closed_port(),
        security=Security.STARTTLS,
        auth=Auth.NONE,
        scope=Scope.DOMAIN,
        domains=("acme.test",),
        team_name="sales",
    )
    world.services.channels.add(world.admin, spec, time.time())
    janes = world.send()[0].id  # on the relay: jane has no channel of her own yet
    draft = Draft(from_="boss@acme.test", to=("x@example.com",), subject="s", text="t")
    composed = compose(draft, now=time.time(), max_size=world.services.max_message_size)
    submitted = world.services.submitter.submit(
        world.admin, [Submission(composed)], now=time.time()
    )
    bosses = submitted[0].id
    box = world.channel(closed_port())

    kept = cli.run("channel", "remove", "relay", "--move-mail-to", "jane-box", *ORG)
    assert kept.code == 4, str(kept)
    assert "relay is kept: 1 messages could not move; 0 messages cancelled, 1 moved" in kept.stdout
    assert bosses in kept.stdout and "mailbox" in kept.stdout
    assert world.store.get_message(janes).channel_id == box.id
    done = cli.ok("channel", "remove", "relay", "--cancel-mail", *ORG)
    assert "removed relay; 1 messages cancelled, 0 moved" in done.stdout
    assert state_of(world, bosses) is State.CANCELLED and state_of(world, janes) is State.QUEUED


def test_cancel_a_channels_mail_and_one_message(world: World, cli: Cli) -> None:
    world.channel(closed_port())
    first, second, third = (r.id for r in world.send(count=3))
    one = cli.ok("message", "cancel", first)
    assert one.stdout.strip() == f"{first} is cancelled"
    again = cli.run("message", "cancel", first)
    assert again.code == 4 and "already cancelled" in again.stderr
    assert cli.run("message", "cancel", "msg_nope").code == 3
    rest = cli.ok("channel", "cancel-mail", "jane-box", *ORG)
    assert rest.stdout.strip() == "2 messages cancelled"
    assert [state_of(world, m) for m in (second, third)] == [State.CANCELLED] * 2
    shown = cli.ok("message", "show", second).stdout
    assert "mailvia: cancelled: by operator" in shown


@pytest.mark.parametrize(
    "bad",
    [
        ("--port", "0"),
        ("--port", "65536"),
        ("--max-connections", "0"),
        ("--max-connections", "101"),
        ("--max-recipients", "1001"),
    ],
)
def test_add_and_edit_take_the_same_bounds(world: World, cli: Cli, bad: tuple[str, str]) -> None:
    world.channel(closed_port())
    add = ("channel", "add", "box3", "--host", "127.0.0.1", "--security", "none")
    assert cli.run(*add, "--auth", "none", "--user", "jane@acme.test", *bad, *ORG).code == 2
    assert cli.run("channel", "edit", "jane-box", *bad, *ORG).code == 2
    assert [c.name for c in world.store.list_channels()] == ["jane-box"]
