"""A provider refusing the OAuth app itself (its secret expired, the app disabled), in process
against the fake providers and a real store: every mailbox of the app is disconnected, and
the organization's admins are told at once (one notice for them all, a banner on their
pages and on the Team channels page, the refusal's kind in each `channel.disconnected`).
Mending the app (an admin saving it; the operator's settings changed, at the next start)
tries again exactly the mailboxes disconnected for that refusal alone: back to active, their
held mail sent in order, no rep reconnecting; one disconnected for its own reason (a revoked
consent) stays disconnected; a provider that still refuses disconnects them again."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import Channel, ChannelState, Provider
from mailvia.domain.clock import SteppingClock
from mailvia.domain.errors import StoreUnavailable
from mailvia.domain.message import State
from mailvia.domain.oauth import AppSource, Refusal
from mailvia.domain.tenancy import User
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.oauth.ports import Revived, StoredTokens
from mailvia.outbox.submit import Submission
from mailvia.store.engine import create_engine
from mailvia.testserver import ThreadedTestServer
from mailvia.testserver.fake import FakeProviders
from support.fake_providers import running
from support.oauth import connect, csrf_of, oauth_settings, oauth_world, pages, sign_in
from support.world import World

JANE, BOB, CAROL = "jane@acme.test", "bob@acme.test", "carol@acme.test"
ADMIN = "boss@acme.test"
REFUSED = "refresh=401 invalid_client"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProviders]:
    yield from running(tmp_path / "fake-maildir")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer(maildir=tmp_path / "pool") as server:
        yield server


def settings(pool: ThreadedTestServer) -> dict[str, str]:
    return {
        "pool_relay": f"smtp://127.0.0.1:{pool.port}?security=none",
        "notice_from": "notices@mailvia.test",
    }


@pytest.fixture
async def world(
    tmp_path: Path, fake: FakeProviders, pool: ThreadedTestServer, migrated_store_url: str
) -> AsyncIterator[World]:
    """On SQLite and PostgreSQL."""
    w = oauth_world(tmp_path / "data", fake, db_url=migrated_store_url, **settings(pool))
    yield w
    await w.close()


def rep(world: World, email: str) -> User:
    tenancy = world.services.tenancy
    found = world.store.find_user(email)
    if found is not None:
        return found
    return tenancy.create_user(
        email, org_name="acme", team_name="sales", admin=False, now=time.time()
    )[0]


async def mailbox(world: World, fake: FakeProviders, email: str) -> str:
    """`email`'s Gmail mailbox, connected through the pages (one connection: mail arrives in
    the order it left)."""
    rep(world, email)
    async with pages(world) as client:
        channel_id = await connect(await sign_in(client, world, email), fake, "google", email)
    world.store.update_channel(replace(world.store.get_channel(channel_id), max_connections=1))
    return channel_id


def send(world: World, email: str, subject: str, count: int) -> list[str]:
    user = rep(world, email)
    subs = [
        Submission(
            compose(
                Draft(from_=email, to=["x@example.com"], subject=f"{subject} {i}", text="hi"),
                now=time.time(),
                max_size=world.services.max_message_size,
            )
        )
        for i in range(count)
    ]
    return [r.id for r in world.services.submitter.submit(user, subs, now=time.time())]


async def deliver(world: World) -> None:
    await world.services.dispatcher.run_once(time.time)


def received(fake: FakeProviders, account: str) -> list[str]:
    return [
        str(message_from_bytes(r["content"])["Subject"])
        for r in fake.received
        if r["account"] == account
    ]


def events(world: World, kind: str) -> list[dict[str, object]]:
    found, _ = world.store.list_events(world.admin.organization_id, cursor=None, limit=500)
    return [e.data for e in found if e.type == kind]


def own_app(world: World) -> None:
    """The organization's own Google app (the fake's client, entered by an admin)."""
    operator = world.services.oauth_apps.operator[Provider.GOOGLE]
    world.services.oauth_apps.put(
        world.admin, Provider.GOOGLE, client_id=operator.client_id,
        client_secret=operator.client_secret, tenant=None, now=time.time(),
    )  # fmt: skip


async def test_a_refused_app_tells_the_admins_and_saving_it_brings_the_mailboxes_back(
    world: World, fake: FakeProviders, pool: ThreadedTestServer
) -> None:
    own_app(world)
    jane, bob, carol = [await mailbox(world, fake, e) for e in (JANE, BOB, CAROL)]
    store = world.store
    # Carol's consent is revoked (her own reason), before the app is refused.
    fake.revoke(CAROL)
    send(world, CAROL, "carol", 1)
    await deliver(world)
    assert store.get_channel(carol).refusal == Refusal.CONSENT
    # The provider now refuses the app: each mailbox finds out as its token is renewed.
    fake.set_faults([REFUSED])
    for account in (JANE, BOB):
        fake.expire(account)
    held = {JANE: send(world, JANE, "jane", 2), BOB: send(world, BOB, "bob", 2)}
    await deliver(world)
    for channel_id in (jane, bob):
        broken = store.get_channel(channel_id)
        assert broken.state is ChannelState.DISCONNECTED
        assert broken.refusal == Refusal.ORGANIZATION_APP
        tokens = store.oauth_tokens(channel_id)
        assert tokens is not None and tokens.refusal == Refusal.ORGANIZATION_APP
    for ids in held.values():
        assert [store.get_message(i).state for i in ids] == [State.HELD] * 2
    refusals = [d.get("refusal") for d in events(world, "channel.disconnected")]
    assert sorted(map(str, refusals)) == ["consent", "organization_app", "organization_app"]
    # The admins hear it once, for both mailboxes, with where to mend it.
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    notices = pool.wait_for(4)
    to_admin = [n for n in notices if n["rcpt_to"] == [ADMIN]]
    assert len(to_admin) == 1 and len(notices) == 4
    body = " ".join(Path(to_admin[0]["file"]).read_text().replace("=\n", "").split())
    assert "Google refused the organization's OAuth app" in body
    assert "Team channels page" in body and "reps need not reconnect" in body
    # ... and the reps are not sent to reconnect: the mended app brings their mailbox back
    [to_jane] = [n for n in notices if n["rcpt_to"] == [JANE]]
    said = " ".join(Path(to_jane["file"]).read_text().replace("=\n", "").split())
    assert "You need not reconnect" in said and "sign in again" not in said
    # ... and on their pages: a banner on every page, and on the Team channels page.
    async with pages(world) as admin:
        await sign_in(admin, world, ADMIN)
        page = html.unescape((await admin.get("/channel")).text)
        assert "Google refused the organization's OAuth app" in page
        assert "2 mailboxes are disconnected" in page and 'href="/team#oauth-google"' in page
        team = html.unescape((await admin.get("/team")).text)
        assert "Saving the app's current client secret below tries them again" in team
        async with pages(world) as jane_pages:
            await sign_in(jane_pages, world, JANE)
            mine = html.unescape((await jane_pages.get("/channel")).text)
            assert "2 mailboxes are disconnected" not in mine  # reps get their own banner
        # The admin mends the app at the provider and saves its secret again.
        fake.set_faults([])
        form = {"csrf": csrf_of(team), "client_id": "mailvia-test-client"}
        saved = await admin.post("/team/oauth/google", data=form | {"client_secret": "s2"})
        assert saved.status_code == 303 and "oauth_app_revived" in saved.headers["location"]
        after = html.unescape((await admin.get("/channel")).text)
        assert "refused the organization's OAuth app" not in after
    for channel_id in (jane, bob):
        back = store.get_channel(channel_id)
        assert back.state is ChannelState.ACTIVE and back.refusal is None
    assert store.get_channel(carol).state is ChannelState.DISCONNECTED  # her own reason
    reconnected = events(world, "channel.reconnected")
    assert sorted((d["released"], d["app_changed"]) for d in reconnected) == [(2, True)] * 2
    await deliver(world)
    assert received(fake, JANE) == ["jane 0", "jane 1"]
    assert received(fake, BOB) == ["bob 0", "bob 1"]
    assert received(fake, CAROL) == []


async def test_an_app_still_refused_when_saved_disconnects_its_mailboxes_again(
    world: World, fake: FakeProviders
) -> None:
    own_app(world)
    jane = await mailbox(world, fake, JANE)
    fake.set_faults([REFUSED])
    fake.expire(JANE)
    held = send(world, JANE, "held", 2)
    await deliver(world)
    assert world.store.get_channel(jane).refusal == Refusal.ORGANIZATION_APP
    own_app(world)  # saved, but not mended at the provider
    assert world.store.get_channel(jane).state is ChannelState.ACTIVE
    await deliver(world)
    again = world.store.get_channel(jane)
    assert again.state is ChannelState.DISCONNECTED
    assert again.refusal == Refusal.ORGANIZATION_APP
    assert "refused the organization's OAuth app (invalid_client)" in (again.state_reason or "")
    assert [world.store.get_message(i).state for i in held] == [State.HELD] * 2
    assert received(fake, JANE) == []


def reopened(data_dir: Path, db_url: str, fake: FakeProviders, **more: str) -> World:
    """The service started again on the same data (another process, or a restart)."""
    world = World.__new__(World)
    world._open(data_dir, db_url, oauth_settings(fake) | more)
    world.jane, world.admin = world.store.find_user(JANE), world.store.find_user(ADMIN)  # type: ignore[assignment]
    return world


async def test_the_operators_app_mended_in_the_settings_is_tried_again_at_the_next_start(
    tmp_path: Path, fake: FakeProviders, pool: ThreadedTestServer, migrated_store_url: str
) -> None:
    data, url = tmp_path / "data", migrated_store_url
    world = oauth_world(data, fake, db_url=url, **settings(pool))
    assert world.services.oauth_apps.view(world.admin, Provider.GOOGLE).source is (
        AppSource.OPERATOR
    )
    jane = await mailbox(world, fake, JANE)
    fake.set_faults([REFUSED])
    fake.expire(JANE)
    held = send(world, JANE, "held", 2)
    await deliver(world)
    assert world.store.get_channel(jane).refusal == Refusal.OPERATOR_APP
    await world.close()  # the service stops
    fake.set_faults([])
    same = reopened(data, url, fake, **settings(pool))
    try:  # started again with the settings unchanged: the refused app is not tried again
        assert same.services.oauth_apps.revive_operator(time.time()) == []
        assert same.store.get_channel(jane).state is ChannelState.DISCONNECTED
    finally:
        await same.close()
    # The operator puts the app's new secret in the settings; two processes start with it.
    first = reopened(data, url, fake, oauth_google_client_secret="rotated", **settings(pool))
    second = reopened(data, url, fake, oauth_google_client_secret="rotated", **settings(pool))
    try:
        revived = [
            *first.services.oauth_apps.revive_operator(time.time()),
            *second.services.oauth_apps.revive_operator(time.time()),
        ]
        assert [(r.channel_id, r.released) for r in revived] == [(jane, 2)]
        assert first.store.get_channel(jane).state is ChannelState.ACTIVE
        await deliver(first)
        assert received(fake, JANE) == ["held 0", "held 1"]
        assert [first.store.get_message(i).state for i in held] == [State.DELIVERED] * 2
    finally:
        await first.close()
        await second.close()


async def test_a_new_apps_refusal_is_told_though_an_old_apps_mailbox_stays_disconnected(
    world: World, fake: FakeProviders, pool: ThreadedTestServer, migrated_store_url: str
) -> None:
    own_app(world)
    carol, jane = [await mailbox(world, fake, e) for e in (CAROL, JANE)]
    # January: the app is refused; Carol's mailbox, the only one sending, is disconnected.
    fake.set_faults([REFUSED])
    fake.expire(CAROL)
    send(world, CAROL, "carol", 1)
    await deliver(world)
    assert world.store.get_channel(carol).refusal == Refusal.ORGANIZATION_APP
    # Her tokens are of a client since replaced: the admin registers a new app (a new
    # secret here), which cannot revive her mailbox; it stays disconnected.
    engine = create_engine(migrated_store_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE oauth_tokens SET client_id = 'retired' WHERE channel_id = :c"),
            {"c": carol},
        )
    engine.dispose()
    fake.set_faults([])
    operator = world.services.oauth_apps.operator[Provider.GOOGLE]
    world.services.oauth_apps.put(
        world.admin, Provider.GOOGLE, client_id=operator.client_id,
        client_secret="new secret", tenant=None, now=time.time(),
    )  # fmt: skip
    assert world.store.get_channel(carol).state is ChannelState.DISCONNECTED
    # The admins are not promised that saving the app brings it back: her rep reconnects.
    async with pages(world) as admin:
        await sign_in(admin, world, ADMIN)
        page = " ".join(html.unescape((await admin.get("/channel")).text).split())
        assert "1 mailbox was connected through a client since replaced" in page
        assert "its rep must reconnect" in page and "tried again at once" not in page
        team = " ".join(html.unescape((await admin.get("/team")).text).split())
        assert "saving the app cannot bring it back; its rep must reconnect" in team
        assert "tries them again at once" not in team
    # June: the new app's secret expires; Jane's mailbox is disconnected: the admins hear it.
    fake.set_faults([REFUSED])
    fake.expire(JANE)
    send(world, JANE, "jane", 1)
    await deliver(world)
    assert world.store.get_channel(jane).refusal == Refusal.ORGANIZATION_APP
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    notices = pool.wait_for(4)
    to_admin = [n for n in notices if n["rcpt_to"] == [ADMIN]]
    assert len(to_admin) == 2 and len(notices) == 4


async def test_a_mailbox_that_fails_to_come_back_stops_neither_the_others_nor_the_save(
    world: World,
    fake: FakeProviders,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own_app(world)
    jane, bob = [await mailbox(world, fake, e) for e in (JANE, BOB)]
    fake.set_faults([REFUSED])
    for account in (JANE, BOB):
        fake.expire(account)
        send(world, account, "held", 1)
    await deliver(world)
    fake.set_faults([])
    store, revive = world.store, world.store._revive

    def failing(channel_id: str, *args: Any) -> Revived | None:
        if channel_id == jane:
            raise StoreUnavailable("the database is unavailable: deadlock detected")
        return revive(channel_id, *args)

    monkeypatch.setattr(store, "_revive", failing)
    async with pages(world) as admin:
        await sign_in(admin, world, ADMIN)
        team = (await admin.get("/team")).text
        form = {"csrf": csrf_of(team), "client_id": "mailvia-test-client", "client_secret": "s2"}
        saved = await admin.post("/team/oauth/google", data=form)
        assert saved.status_code == 303
    assert store.get_channel(jane).state is ChannelState.DISCONNECTED
    assert store.get_channel(bob).state is ChannelState.ACTIVE
    assert f"channel {jane} not tried again with its app" in caplog.text

    # the store failing altogether: a process still starts
    def down(*args: Any, **kwargs: Any) -> list[Revived]:
        raise StoreUnavailable("the database is unavailable")

    monkeypatch.setattr(store, "revive_mailboxes", down)
    assert world.services.oauth_apps.revive_operator(time.time()) == []


DAVE = "dave@globex.test"  # another organization's rep, on the operator's app


async def refuse(world: World, fake: FakeProviders, *accounts: str) -> None:
    """The provider refuses the app; each account's mailbox meets it as it sends."""
    fake.set_faults([REFUSED])
    for account in accounts:
        fake.expire(account)
        send(world, account, "held", 1)
    await deliver(world)
    fake.set_faults([])


async def test_saving_an_app_revives_only_its_organizations_mailboxes_refused_for_an_app(
    world: World, fake: FakeProviders
) -> None:
    """Another organization's mailbox of the same client, the owner's Disconnect and a
    consent refusal are never revived by an organization's admin saving its app."""
    own_app(world)
    tenancy, now = world.services.tenancy, time.time()
    tenancy.create_org("globex", now)
    tenancy.create_team("ops", "globex", now)
    tenancy.add_domain("globex", "globex.test", now)
    tenancy.create_user(DAVE, org_name="globex", team_name="ops", admin=False, now=now)
    async with pages(world) as client:
        dave = await connect(await sign_in(client, world, DAVE), fake, "google", DAVE)
    jane, bob, carol = [await mailbox(world, fake, e) for e in (JANE, BOB, CAROL)]
    fake.revoke(CAROL)  # her consent revoked first: her own reason
    send(world, CAROL, "carol", 1)
    await deliver(world)
    await refuse(world, fake, DAVE, JANE, BOB)
    store = world.store
    assert store.get_channel(dave).refusal == Refusal.OPERATOR_APP  # globex has no app
    assert store.get_channel(carol).refusal == Refusal.CONSENT
    # A password channel disconnected (even one marked with an app's refusal): no tokens.
    box = world.team_channel(2525, name="pw-box")
    assert store.disconnect_channel(box, "535 5.7.8 no", time.time(), refusal="organization_app")
    # Bob disconnects his mailbox himself (its tokens deleted): his own act, never undone.
    bob_user = store.find_user(BOB)
    assert bob_user is not None
    await world.services.mailboxes.disconnect(bob_user, bob, time.time())
    saved = world.services.oauth_apps.put(
        world.admin, Provider.GOOGLE, client_id="mailvia-test-client",
        client_secret="s2", tenant=None, now=time.time(),
    )  # fmt: skip
    assert saved.revived == 1
    assert store.get_channel(jane).state is ChannelState.ACTIVE
    for left in (dave, bob, carol, box.id):
        assert store.get_channel(left).state is ChannelState.DISCONNECTED, left
    assert store.get_channel(dave).refusal == Refusal.OPERATOR_APP


def race(store: Any, channel: Channel, fresh: StoredTokens) -> list[BaseException]:
    """A reconnect (new tokens) and the revival of the same mailbox, at once."""
    barrier, errors = threading.Barrier(2), []

    def reconnect() -> None:
        barrier.wait()
        try:
            store.connect_mailbox(channel, fresh)
        except BaseException as exc:
            errors.append(exc)

    def revive() -> None:
        barrier.wait()
        try:
            store.revive_mailboxes(
                Provider.GOOGLE, fresh.client_id, ["organization_app"], time.time()
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (reconnect, revive)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


async def test_a_revive_racing_a_reconnect_neither_fails_nor_deadlocks(
    world: World, fake: FakeProviders, migrated_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The revival and a reconnect take the channel's row, then its tokens' (PostgreSQL:
    the other order deadlocked); on SQLite the write lock serializes them."""
    own_app(world)
    jane = await mailbox(world, fake, JANE)
    await refuse(world, fake, JANE)
    store, engine = world.store, create_engine(migrated_store_url)
    try:
        for _ in range(15):
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "UPDATE oauth_tokens SET failure = 'refused', "
                        "refusal = 'organization_app' WHERE channel_id = :c"
                    ),
                    {"c": jane},
                )
                conn.execute(
                    sa.text(
                        "UPDATE channels SET state = 'disconnected', "
                        "refusal = 'organization_app' WHERE id = :c"
                    ),
                    {"c": jane},
                )
            channel, tokens = store.get_channel(jane), store.oauth_tokens(jane)
            assert tokens is not None
            fresh = replace(tokens, failure=None, refusal=None, refused_app=None)
            assert race(store, channel, fresh) == []
            assert "not tried again with its app" not in caplog.text
            after = store.oauth_tokens(jane)
            assert after is not None and after.failure is None
    finally:
        engine.dispose()
