"""A refused password (535 at AUTH) is mended in the words of the channel's kind on the pages,
as the API's and CLI's `state_hint` says it: SendGrid's `apikey` and API key, a relay's
operator, a person's mailbox password, never the mailbox's words for every kind. The real web
app over the world's SQLite store (httpx's ASGI transport), a real test SMTP server that
refuses the password, the dispatcher driven by `run_once`."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailvia.domain.channel import Auth, Channel, ChannelState, Scope, Security
from mailvia.domain.message import State
from mailvia.domain.probe import state_hint
from mailvia.outbox.channels import ChannelSpec
from mailvia.passwords import hash_password
from mailvia.testserver import TestServer
from mailvia.web import create_web
from support.world import SHORT, Certs, World, make_certs

PASSWORD = "a-password-of-my-own"
MAILBOX_WORDS = "changing the mailbox's password breaks the connection"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path / "data")
    for email in ("jane@acme.test", "boss@acme.test"):
        user = world.services.tenancy.user(email)
        world.store.set_password(user.id, hash_password(PASSWORD), must_change_password=False)
    yield world
    await world.close()


def _words(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def _pages(world: World, email: str) -> httpx.AsyncClient:
    app = create_web(world.services, secure_cookies=False, session_key=b"k" * 32)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://pages")
    page = (await client.get("/signin")).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "email": email, "password": PASSWORD}
    assert (await client.post("/signin", data=form)).status_code == 303
    return client


def _channel(world: World, kind: str, port: int, certs: Certs) -> Channel:
    """A channel of `kind` whose password the server refuses: SendGrid's (a team's API key),
    a team's own relay (no preset), or jane's own mailbox."""
    common = {
        "host": "127.0.0.1",
        "port": port,
        "security": Security.STARTTLS,
        "auth": Auth.LOGIN,
        "password": "a-wrong-password",
        "ca_pem": certs.ca_pem,
        "timeouts": SHORT,
    }
    if kind == "mailbox":
        return world.channel(port, certs=certs, password="a-wrong-password")
    team = {"scope": Scope.DOMAIN, "domains": ("acme.test",), "team_name": "sales"}
    preset = {"preset": "sendgrid", "username": "apikey"} if kind == "sendgrid" else {}
    login = {"username": "relay-user"} | preset
    spec = ChannelSpec(name=f"acme-{kind}", **(common | team | login))  # type: ignore[arg-type]
    return world.services.channels.add(world.admin, spec, time.time())[0]


@pytest.mark.parametrize("kind", ["sendgrid", "relay", "mailbox"])
async def test_the_pages_mend_a_refused_password_in_the_channels_words(
    world: World, tmp_path: Path, kind: str
) -> None:
    certs = make_certs(tmp_path / "certs")
    users = {"apikey": "SG.right", "relay-user": "right", "jane": "right"}
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth=users) as smtp:
        made = _channel(world, kind, smtp.port, certs)
        [sent] = world.send()
        await world.services.dispatcher.run_once(time.time)
    channel = world.store.get_channel(made.id)
    assert channel.state is ChannelState.DISCONNECTED, channel
    assert (channel.state_reason or "").startswith("535"), channel.state_reason
    assert world.store.get_message(sent.id).state is State.HELD
    hint = state_hint(channel.state_reason, channel)
    assert hint is not None
    assert (MAILBOX_WORDS in hint.lower()) is (kind == "mailbox"), hint
    if kind == "sendgrid":
        assert "the word apikey" in hint, hint

    admin = await _pages(world, "boss@acme.test")
    jane = await _pages(world, "jane@acme.test")
    try:
        shown = {
            "channel page": _words((await admin.get(f"/channels/{channel.id}")).text),
            "message page": _words((await jane.get(f"/activity/{sent.id}")).text),
            "activity": _words((await jane.get("/activity")).text),
            "my channel": _words((await jane.get("/channel")).text),
        }
    finally:
        await admin.aclose()
        await jane.aclose()
    for where, words in shown.items():
        if where == "my channel" and kind != "mailbox":
            continue  # a team channel is not jane's own (its banner is the admin's)
        assert hint in words, (where, words)
        if kind != "mailbox":
            assert MAILBOX_WORDS not in words.lower(), (where, words)
