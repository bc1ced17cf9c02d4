"""The ways out of a wrong channel on the pages, in process (no browser): the real web app over
the world's real SQLite store through httpx's ASGI transport, a real test SMTP server, the
dispatcher driven by `run_once`. Edit (tested before it is saved), remove with the mail
cancelled or moved, cancel a channel's mail, cancel one message; who may, and bad input."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailvia.domain.channel import Auth, Channel, Provider
from mailvia.domain.message import State
from mailvia.domain.presets import PRESETS
from mailvia.passwords import hash_password
from mailvia.testserver import TestServer
from mailvia.web import create_web
from support.ports import closed_port
from support.world import Certs, World, make_certs

PASSWORD = "a-password-of-my-own"
RIGHT = "Corr3ct-Horse-Battery"  # the test server's password for jane


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path / "data")
    now = time.time()
    world.services.tenancy.create_user(
        "joe@acme.test", org_name="acme", team_name="sales", admin=False, now=now
    )
    for email in ("jane@acme.test", "joe@acme.test", "boss@acme.test"):
        user = world.services.tenancy.user(email)
        world.store.set_password(user.id, hash_password(PASSWORD), must_change_password=False)
    yield world
    await world.close()


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


class Browser:
    """A signed-in user's pages; each form is sent with the session's CSRF token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str) -> httpx.Response:
        answer = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', answer.text)
        self.csrf = found.group(1) if found else self.csrf
        return answer

    async def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        return await self.client.post(path, data={"csrf": self.csrf, **form})


async def browser(world: World, email: str) -> Browser:
    app = create_web(world.services, secure_cookies=False, session_key=b"k" * 32)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    pages = Browser(httpx.AsyncClient(transport=transport, base_url="http://pages"))
    await pages.get("/signin")
    signed = await pages.post("/signin", {"email": email, "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    await pages.get("/channel")  # the signed-in session's token
    return pages


def edit_form(page: str) -> dict[str, str]:
    """The edit form's fields as the page fills them in."""
    form = page[page.index('/edit" class="stack"') : page.index(">Test and save</button>")]
    fields = dict(re.findall(r'name="(\w+)" type="(?:text|password)" value="([^"]*)"', form))
    for name in ("security", "auth"):
        select = form[form.index(f'name="{name}"') :]
        fields[name] = re.search(r'<option value="(\w+)" selected', select).group(1)  # type: ignore[union-attr]
    return {k: html.unescape(v) for k, v in fields.items()}


def text_of(answer: httpx.Response) -> str:
    return words(answer.text)


def words(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def test_a_rep_fixes_the_port_then_the_sign_in_on_the_page_and_the_mail_leaves(
    world: World, certs: Certs
) -> None:
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": RIGHT}) as smtp:
        channel = world.channel(closed_port(), certs=certs, auth=Auth.NONE, max_connections=1)
        sent = world.send(count=2)
        await world.services.dispatcher.run_once(time.time)
        assert world.store.get_message(sent[0].id).state is State.DEFERRED
        jane = await browser(world, "jane@acme.test")
        url = f"/channels/{channel.id}"
        form = edit_form((await jane.get(url)).text)
        assert form["port"] == str(channel.port) and form["auth"] == "none"

        still_wrong = await jane.post(url + "/edit", form | {"port": str(closed_port())})
        assert still_wrong.status_code == 400
        assert "The test of your changes failed, so nothing was saved" in text_of(still_wrong)
        assert 'class="step step-fail"' in still_wrong.text
        assert world.store.get_channel(channel.id).port == channel.port

        # The port alone: the test tries the sender (MAIL FROM), which this server refuses
        # without a sign-in, so nothing is saved (a saved edit would disconnect at once).
        port_only = await jane.post(url + "/edit", form | {"port": str(smtp.port)})
        assert port_only.status_code == 400
        assert "This channel needs a sign-in" in text_of(port_only)
        assert world.store.get_channel(channel.id).port == channel.port
        assert all("DATA" not in s["commands"] for s in smtp.sessions)

        signed = form | {"port": str(smtp.port), "auth": "plain", "username": "jane"}
        back = await jane.post(url + "/edit", signed | {"password": RIGHT})
        assert back.status_code == 303 and back.headers["location"].endswith("notice=edited")
        shown = await jane.get(back.headers["location"])
        assert RIGHT not in shown.text
        await world.services.dispatcher.run_once(time.time)
        assert [world.store.get_message(r.id).state for r in sent] == [State.DELIVERED] * 2
        assert len(smtp.received) == 2


async def test_an_edit_saved_without_testing_and_bad_input(world: World) -> None:
    channel = world.channel(closed_port())
    jane = await browser(world, "jane@acme.test")
    url = f"/channels/{channel.id}"
    form = edit_form((await jane.get(url)).text)
    for port in ("abc", "0", "70000"):
        bad = await jane.post(url + "/edit", form | {"port": port})
        assert bad.status_code == 400 and "port" in text_of(bad), port
    assert (await jane.post(url + "/edit", form | {"security": "ssl"})).status_code == 400
    for connections in ("0", "101", "many"):
        bad = await jane.post(url + "/edit", form | {"max_connections": connections})
        assert bad.status_code == 400 and "connections at once" in text_of(bad), connections
    saved = await jane.post(url + "/edit", form | {"host": "localhost", "no_test": "on"})
    assert saved.status_code == 303
    assert world.store.get_channel(channel.id).host == "localhost"
    refused = await jane.client.post(url + "/edit", data=form | {"name": "x"})  # no CSRF token
    assert refused.status_code == 403
    joe = await browser(world, "joe@acme.test")
    assert (await joe.post(url + "/edit", form | {"name": "mine"})).status_code == 404
    assert (await joe.post(url + "/remove", {"mail": "cancel"})).status_code == 404
    assert (await joe.post(url + "/cancel-mail", {})).status_code == 404
    assert world.store.get_channel(channel.id).name == channel.name


async def test_removing_a_channel_with_mail_offers_cancel_or_move(world: World) -> None:
    channel = world.channel(closed_port())
    other = world.team_channel(closed_port(), name="jane-other")  # one own channel an address
    sent = world.send(count=2)
    jane = await browser(world, "jane@acme.test")
    url = f"/channels/{channel.id}"
    page = text_of(await jane.get(url))
    assert "what becomes of its 2 waiting messages?" in page and "Move to" in page
    asked = await jane.post(url + "/remove", {})
    assert asked.status_code == 409 and "2 message(s) waiting" in text_of(asked)

    moved = await jane.post(url + "/remove", {"mail": "move", "to": other.id})
    assert moved.status_code == 303 and moved.headers["location"] == "/channel?notice=removed"
    assert all(world.store.get_message(r.id).channel_id == other.id for r in sent)

    boss = await browser(world, "boss@acme.test")  # the team's channel: an admin's to remove
    cancelled = await boss.post(f"/channels/{other.id}/remove", {"mail": "cancel"})
    assert cancelled.status_code == 303
    assert all(world.store.get_message(r.id).state is State.CANCELLED for r in sent)
    assert world.services.channels.visible(world.jane) == []


async def test_cancelling_a_channels_mail_and_one_message_on_the_pages(world: World) -> None:
    channel = world.channel(closed_port())
    first, second = world.send(count=2)
    jane = await browser(world, "jane@acme.test")
    message = await jane.get(f"/activity/{first.id}")
    assert "Cancel this message" in message.text
    done = await jane.post(f"/activity/{first.id}/cancel", {})
    assert done.status_code == 303 and done.headers["location"].endswith("notice=cancelled")
    shown = text_of(await jane.get(done.headers["location"]))
    assert "Message cancelled" in shown and "Cancel this message" not in shown
    assert "Cancelled by jane@acme.test: it will not be sent." in shown
    again = await jane.post(f"/activity/{first.id}/cancel", {})
    assert again.status_code == 409 and "already cancelled" in text_of(again)
    joe = await browser(world, "joe@acme.test")
    assert (await joe.post(f"/activity/{second.id}/cancel", {})).status_code == 404

    page = text_of(await jane.get(f"/channels/{channel.id}"))
    assert "Cancel its waiting mail" in page
    all_of_it = await jane.post(f"/channels/{channel.id}/cancel-mail", {})
    assert all_of_it.status_code == 303
    assert "waiting mail is cancelled" in text_of(await jane.get(all_of_it.headers["location"]))
    assert world.store.get_message(second.id).state is State.CANCELLED


async def test_a_message_delivered_to_some_recipients_says_how_many(
    world: World, certs: Certs
) -> None:
    """One recipient refused (the test server's `permfail@`), one delivered: the message is
    `delivered`, and its page says to how many rather than "the receiving server accepted it"."""
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key) as smtp:
        world.channel(smtp.port, certs=certs, auth=Auth.NONE, username=None, password=None)
        (sent,) = world.send(to=("permfail@example.com", "bob@example.com"))
        await world.services.dispatcher.run_once(time.time)
        assert world.store.get_message(sent.id).state is State.DELIVERED
        jane = await browser(world, "jane@acme.test")
        shown = text_of(await jane.get(f"/activity/{sent.id}"))
    assert "Delivered to 1 of 2 recipients" in shown and "accepted it." not in shown


REFUSED_SENDER = "mail=550 5.7.1 sender address rejected: not owned by user"
THIS_MAIL = "The channel's server refused to send this mail"
HELD = "Its mail is held until the channel is reconnected."


def part(answer: httpx.Response, start: str, end: str) -> str:
    """The text of a page between two of its marks (out of the banner, which says held)."""
    page = answer.text
    begins = page.index(start) + len(start)
    return words(page[begins : page.index(end, begins)])


async def refused_at_mail(world: World, certs: Certs) -> tuple[Channel, str]:
    """A message refused at MAIL by the channel's server: its channel disconnected, it held."""
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, faults=[REFUSED_SENDER]) as smtp:
        channel = world.channel(
            smtp.port, certs=certs, auth=Auth.NONE, username=None, password=None
        )
        (sent,) = world.send()
        await world.services.dispatcher.run_once(time.time)
    assert world.store.get_message(sent.id).state is State.HELD
    return channel, sent.id


async def test_a_sender_refused_by_the_channels_server_is_held_not_blamed_on_the_recipient(
    world: World, certs: Certs
) -> None:
    """`550 5.7.1` at MAIL is the channel's server refusing the sender: the channel is
    disconnected and the mail held until it is reconnected. The pages said "the receiving
    server refused the message (a spam filter or the recipient's rules). mailvia does not try
    again": the wrong server, and untrue (the held mail leaves after a reconnect)."""
    channel, sent = await refused_at_mail(world, certs)
    jane = await browser(world, "jane@acme.test")
    page = await jane.get(f"/activity/{sent}")
    recipients = part(page, 'id="rcpt-title"', "</section>")
    assert f"{THIS_MAIL}: its reply says why" in recipients and HELD in recipients
    # the history: the channel's server, and no "is held" of a past attempt
    attempts = part(page, 'id="attempts-title"', "</section>")
    assert THIS_MAIL in attempts and HELD not in attempts, attempts
    for path in (f"/channels/{channel.id}", "/channel"):
        shown = text_of(await jane.get(path))
        assert "recipient's rules" not in shown and "does not try again" not in shown, path
    # the channel's pages: its server refused to send mail (no one message is "this mail"),
    # and no held sentence beside the state's own and the banner's
    box = part(await jane.get(f"/channels/{channel.id}"), 'class="why-box reason">', "</div>")
    assert box.startswith("The channel's server refused to send mail: its reply says"), box
    assert HELD not in box and "this mail" not in box
    state = part(await jane.get(f"/channels/{channel.id}"), 'class="lead">', 'class="why-box')
    assert "cannot sign in" not in state and "sends nothing until it is reconnected" in state
    row = part(await jane.get("/channel"), 'data-label="State">', "</tr>")
    assert row.startswith("Disconnected The channel's server refused to send mail:"), row
    assert "held" not in row
    banner = re.search(
        r'<section class="banner".*?</section>', (await jane.get("/channel")).text, re.S
    )
    assert banner is not None
    said = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", banner.group(0))).split())
    assert said.count("held until") == 1, said  # the count beside it says so: once
    assert "1 message is held until the channel is reconnected" in said


@pytest.mark.parametrize("ending", ["cancelled", "expired", "released"])
async def test_held_mail_cancelled_expired_or_released_is_no_longer_said_held(
    world: World, certs: Certs, ending: str
) -> None:
    """The words came from the recipient's last attempt (channel_broken), but cancelling and
    expiring write the recipient a reply of their own without an attempt: a cancelled message
    said "Cancelled by jane@acme.test: it will not be sent. Its mail is held until the channel
    is reconnected". A released one is queued: it waits for no reconnect."""
    channel, sent = await refused_at_mail(world, certs)
    jane = await browser(world, "jane@acme.test")
    if ending == "cancelled":
        assert (await jane.post(f"/activity/{sent}/cancel", {})).status_code == 303
    elif ending == "expired":
        world.store.expire_due(time.time() + 365 * 86400, "test")
    else:
        assert world.store.release_channel(channel.id, time.time()) == 1
    ended = {"cancelled": State.CANCELLED, "expired": State.EXPIRED, "released": State.QUEUED}
    assert world.store.get_message(sent).state is ended[ending]
    recipients = part(await jane.get(f"/activity/{sent}"), 'id="rcpt-title"', "</section>")
    assert "held" not in recipients, recipients
    if ending == "released":  # its reply is still the channel's server's, not a recipient's
        assert f"{THIS_MAIL}: its reply says why" in recipients, recipients
    else:
        assert "channel's server" not in recipients, recipients


async def test_team_channels_custom_server_opens_shared_under_team_channels(
    world: World,
) -> None:
    """Team channels' "Custom SMTP server" link opens the form for a team channel: under the
    Team channels crumb, "Share with team" chosen (it opened as "Only me" under "My delivery
    channel", while its own hint told the admin to choose Share)."""
    boss = await browser(world, "boss@acme.test")
    team = (await boss.get("/team")).text
    link = re.search(r'<a href="(/channels/new[^"]*)">Custom SMTP server</a>', team)
    assert link is not None
    page = (await boss.get(html.unescape(link.group(1)))).text
    assert re.search(r'class="crumb"><a href="/team">Team channels</a>', page)
    assert '<a href="/team" aria-current="page">Team channels</a>' in page  # the main menu too
    assert 'aria-current="page">My delivery channel' not in page
    assert re.search(r'id="share-yes" name="share" value="on" checked', page)
    assert not re.search(r'id="share-no" name="share" value="" checked', page)
    # A rep's own "Connect a custom SMTP server" stays theirs; a rep cannot ask for sharing.
    mine = (await boss.get("/channels/new")).text
    assert re.search(r'class="crumb"><a href="/channel">My delivery channel</a>', mine)
    assert '<a href="/channel" aria-current="page">My delivery channel</a>' in mine
    assert re.search(r'id="share-no" name="share" value="" checked', mine)
    jane = await browser(world, "jane@acme.test")
    hers = (await jane.get("/channels/new?share=on")).text
    assert 'id="share-yes"' not in hers and "My delivery channel</a>" in hers


@pytest.mark.parametrize("preset", ["gmail", "microsoft365"])
async def test_a_mailbox_password_form_points_to_oauth_as_it_stands(
    world: World, preset: str
) -> None:
    """The Gmail and Microsoft 365 password forms said "OAuth sign-in is not available yet"
    (Gmail) or nothing (Microsoft 365) though OAuth is mailvia's way in: without the
    organization's app, who sets it up; with it, a link to connect by OAuth instead."""
    provider = Provider.GOOGLE if preset == "gmail" else Provider.MICROSOFT
    jane = await browser(world, "jane@acme.test")
    before = (await jane.get(f"/channels/new?preset={preset}")).text
    assert "not available yet" not in before
    assert f"needs the organization's {provider.display_name} app" in before
    assert f'href="/oauth/{provider}/start"' not in before
    world.services.oauth_apps.put(
        world.admin, provider, client_id="client-1", client_secret="s3cret",
        tenant="organizations" if provider is Provider.MICROSOFT else None, now=time.time(),
    )  # fmt: skip
    after = (await jane.get(f"/channels/new?preset={preset}")).text
    assert f'<a href="/oauth/{provider}/start">connect {PRESETS[preset].title} by OAuth</a>' in (
        after
    )
    assert "needs the organization's" not in after
