"""The webhook sender on its own: signed POSTs to a real receiver on 127.0.0.1, the outbound
address guard at send time (a host that resolves elsewhere since the webhook was made), TLS
verified against the URL's host name although the connection goes to the checked IP, no
redirects followed, and timeouts."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from standardwebhooks import Webhook as Verifier

from mailvia.outbox.webhooks import new_secret
from mailvia.transport.guard import REFUSED_MESSAGE, OutboundGuard
from mailvia.transport.webhooks import HttpWebhookSender
from support.receiver import Receiver

LOOPBACK = OutboundGuard([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
BODY = b'{"id":"evt_1","type":"message.delivered","created_at":"x","data":{}}'


async def post(
    sender: HttpWebhookSender, url: str, secret: str = ""
) -> tuple[int | None, str | None]:
    result = await sender.send(
        url, secret=secret or new_secret(), message_id="evt_1", timestamp=time.time(), body=BODY
    )
    await sender.aclose()
    return result.status, result.error


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_the_post_is_signed_and_verifies() -> None:
    secret = new_secret()
    with Receiver() as hooks:
        assert await post(HttpWebhookSender(guard=LOOPBACK), hooks.url(), secret) == (204, None)
        (request,) = hooks.wait_for(1)
    assert Verifier(secret).verify(request.body, request.headers)["id"] == "evt_1"
    assert request.headers["host"] == f"127.0.0.1:{hooks.port}"
    assert request.headers["user-agent"].startswith("mailvia/")


async def test_the_guard_refuses_at_send_time_and_nothing_connects() -> None:
    with Receiver() as hooks:
        for host in ("127.0.0.1", "localhost"):
            status, error = await post(
                HttpWebhookSender(guard=OutboundGuard()), hooks.url(host=host)
            )
            assert (status, error) == (None, REFUSED_MESSAGE)
        assert hooks.connections == 0


async def test_tls_is_checked_against_the_urls_host_name(ca: trustme.CA) -> None:
    with Receiver(tls=tls_server(ca, "localhost")) as hooks:
        sender = HttpWebhookSender(guard=LOOPBACK, verify=trusting(ca))
        assert await post(sender, hooks.url(host="localhost")) == (204, None)
        (request,) = hooks.wait_for(1)
        assert request.headers["host"] == f"localhost:{hooks.port}"
        # The same server by its IP: the certificate does not name it.
        sender = HttpWebhookSender(guard=LOOPBACK, verify=trusting(ca))
        status, error = await post(sender, hooks.url(host="127.0.0.1"))
        assert status is None and error == "the TLS certificate was not accepted"
        # A certificate from another CA.
        sender = HttpWebhookSender(guard=LOOPBACK, verify=trusting(trustme.CA()))
        assert (await post(sender, hooks.url(host="localhost")))[1] == (
            "the TLS certificate was not accepted"
        )
        assert len(hooks.requests) == 1


async def test_redirects_are_not_followed() -> None:
    with Receiver([302]) as hooks:
        assert await post(HttpWebhookSender(guard=LOOPBACK), hooks.url()) == (302, None)
        assert len(hooks.requests) == 1


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def test_a_receiver_that_never_answers_times_out(silent: int) -> None:
    sender = HttpWebhookSender(guard=LOOPBACK, timeout=0.5)
    started = time.monotonic()
    status, error = await post(sender, f"http://127.0.0.1:{silent}/hook")
    assert status is None and error == "no answer within 0.5 s"
    assert time.monotonic() - started < 3


async def test_a_closed_port_is_could_not_connect(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, error = await post(HttpWebhookSender(guard=LOOPBACK), f"http://127.0.0.1:{port}/")
    assert (status, error) == (None, "could not connect")
