"""The shared pool, where mail goes that no other channel takes, is listed with the channels
everyone sees: `mailvia channel list` (text: marked as the pool; JSON: kind `pool`) and
`GET /v1/channels`, for members and admins, without the relay's login. Without POOL_RELAY
there is no pool to list. The CLI as the real console script on the world's data folder."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import httpx

from mailvia.domain.channel import ChannelState
from mailvia.passwords import hash_password
from mailvia.web import create_web
from support.api import Api
from support.cli import Cli, require_console_script
from support.world import World

RELAY = "smtp://pool-login:pool-pass@relay.example.net:2525?security=starttls"


async def test_channel_list_and_the_api_show_the_shared_pool(tmp_path: Path) -> None:
    require_console_script()
    api = Api(World(tmp_path / "data", pool_relay=RELAY))
    try:
        api.jane_channel()
        # The relay's reply (the operator's, perhaps naming its account) is not shown.
        api.world.store.set_channel_throttle("ch_pool", None, 0)
        reason = "421 4.7.0 relay account acct-4711 over its quota"
        api.world.store.set_channel_state("ch_pool", ChannelState.ACTIVE, reason, time.time())
        cli = Cli(api.world.settings.data_dir, MAILVIA_POOL_RELAY=RELAY)
        text = cli.ok("channel", "list", "--org", "acme").lines
        assert [line.split()[0] for line in text] == ["jane-box", "shared"]
        assert "pool" in text[1].split() and "any address (the shared pool)" in text[1]
        assert "relay.example.net:2525" in text[1] and "ch_pool" in text[1]
        listed = cli.ok("channel", "list", "--org", "acme", "--json").json()
        kinds = [(c["name"], c["kind"]) for c in listed]
        assert kinds == [("jane-box", "smtp"), ("shared pool", "pool")]
        assert listed[1]["username"] is None and "pool-login" not in str(listed)
        assert listed[1]["owner"] is None and "_platform" not in str(listed)
        assert listed[1]["state_reason"] is None and "acct-4711" not in str(listed)
        shown = cli.run("channel", "show", "ch_pool", "--org", "acme", "--json")
        assert shown.code != 0 and "ch_pool" in shown.stderr, str(shown)
        for user in ("jane", "joe", "boss"):
            data = (await api.client(user).get("/v1/channels")).json()["data"]
            pools = [c for c in data if c["kind"] == "pool"]
            assert [(c["id"], c["name"], c["username"], c["owner"]) for c in pools] == [
                ("ch_pool", "shared pool", None, None)
            ], user
            assert "_platform" not in str(data) and "acct-4711" not in str(data), user
            got = await api.client(user).get("/v1/channels/ch_pool")
            assert got.status_code == 404, user
    finally:
        await api.aclose()


async def test_without_a_pool_relay_no_pool_is_listed(tmp_path: Path) -> None:
    require_console_script()
    world = World(tmp_path / "data")
    try:
        world.channel(2525)
        listed = Cli(world.settings.data_dir).ok("channel", "list", "--org", "acme", "--json")
        assert [c["kind"] for c in listed.json()] == ["smtp"]
    finally:
        await world.close()


async def test_the_pool_is_listed_as_its_row_reads_now_not_as_at_start(tmp_path: Path) -> None:
    """Paused (or disconnected) after the service started, the pool is listed so by the same
    process: `GET /v1/channels` and the Activity page's channel cards read its current row,
    as every other channel is read, not the row read when the service was wired."""
    api = Api(World(tmp_path / "data", pool_relay=RELAY))
    try:
        services = api.world.services
        services.channels.visible(api.world.jane)  # wired and serving
        for state in (ChannelState.PAUSED, ChannelState.DISCONNECTED, ChannelState.ACTIVE):
            api.world.store.set_channel_state("ch_pool", state, "by the operator", time.time())
            data = (await api.client("jane").get("/v1/channels")).json()["data"]
            assert [c["state"] for c in data if c["kind"] == "pool"] == [str(state)], data
            listed = services.channels.listed(api.world.jane)
            assert [c.state for c in listed if c.id == "ch_pool"] == [state]
    finally:
        await api.aclose()


async def test_the_activity_pages_pool_card_reads_its_state_now(tmp_path: Path) -> None:
    """Jane's mail waits on the pool (she has no channel of her own); the pool is paused after
    the service started: the Activity page's card for it says Paused."""
    world = World(tmp_path / "data", pool_relay=RELAY)
    jane = world.services.tenancy.user("jane@acme.test")
    world.store.set_password(jane.id, hash_password("a-password"), must_change_password=False)
    app = create_web(world.services, secure_cookies=False, session_key=b"k" * 32)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    pages = httpx.AsyncClient(transport=transport, base_url="http://pages")
    try:
        [sent] = world.send()
        assert world.store.get_message(sent.id).channel_id == "ch_pool"
        form = re.search(r'name="csrf" value="([^"]+)"', (await pages.get("/signin")).text)
        assert form is not None
        signed = {"csrf": form[1], "email": "jane@acme.test", "password": "a-password"}
        assert (await pages.post("/signin", data=signed)).status_code == 303
        world.store.set_channel_state("ch_pool", ChannelState.PAUSED, "by the operator", 1.0)
        page = (await pages.get("/activity")).text
        cards = page[page.index('id="channels-title"') :]
        card = html.unescape(re.sub(r"<[^>]+>", " ", cards[: cards.index("</li>")]))
        assert "shared pool" in card and "Paused" in card.split(), card
    finally:
        await pages.aclose()
        await world.close()


async def test_the_pages_show_mail_held_on_the_pool_without_the_relays_reply(
    tmp_path: Path,
) -> None:
    """As the API hides the pool's state reason (its relay's reply, the operator's to read),
    the pages' held-mail boxes (Activity, the message's page) and the route on My delivery
    channel tell an organization's user, member or admin, that the shared pool is not sending,
    that it is the operator's and that nothing is lost: not the relay's reply."""
    world = World(tmp_path / "data", pool_relay=RELAY)
    for user in (world.jane, world.admin):
        world.store.set_password(user.id, hash_password("a-password"), must_change_password=False)
    app = create_web(world.services, secure_cookies=False, session_key=b"k" * 32)
    try:
        [sent] = world.send()
        seen = world.store.get_channel("ch_pool")
        reply = "421 4.7.0 relay account acct-4711 over its quota"
        assert world.store.disconnect_channel(seen, reply, time.time()) is not None
        assert world.store.hold_channel("ch_pool", time.time()) == 1
        for email, path in (("jane@acme.test", "/channel"), ("boss@acme.test", "/activity")):
            pages = await _signed_in(app, email)
            try:
                for page in ("/activity", f"/activity/{sent.id}", path):
                    shown = (await pages.get(page)).text
                    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", shown)).split())
                    assert "acct-4711" not in shown and "over its quota" not in shown, page
                    assert "shared pool is not sending right now (it is disconnected)" in words
                    assert (
                        "operator of this mailvia, not your organization; nothing is lost" in words
                    ), (page, words)
            finally:
                await pages.aclose()
    finally:
        await world.close()


async def _signed_in(app: object, email: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))  # type: ignore[arg-type]
    pages = httpx.AsyncClient(transport=transport, base_url="http://pages")
    form = re.search(r'name="csrf" value="([^"]+)"', (await pages.get("/signin")).text)
    assert form is not None
    signed = {"csrf": form[1], "email": email, "password": "a-password"}
    assert (await pages.post("/signin", data=signed)).status_code == 303
    return pages
