"""End to end: guessing someone's credentials from many client addresses never locks the
owner out, on the submission port (AUTH PLAIN with an API token) nor on the sign-in page;
the guessing clients themselves are slowed and refused.

A real `mailvia serve` subprocess; attackers are real clients bound to other loopback
addresses (Linux routes all of 127.0.0.0/8 to lo), the owner signs in from 127.0.0.1 with
smtplib and in Debian's headless Chromium.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.browser import chromium
from support.pages import Site, serving, sign_in

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(180)]

SUBMISSION = r"^listening submission smtp://127\.0\.0\.1:(\d+)$"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("abuse")
    with serving(root, "--submission-listen", "127.0.0.1:0") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def auth_plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def smtp_from(site: Site, source: str) -> smtplib.SMTP:
    """A submission client connected from `source` (a loopback address), after STARTTLS."""
    port = int(site.serve.wait_for_line(SUBMISSION).group(1))
    context = ssl.create_default_context(cafile=str(site.cli.data_dir / "tls" / "submission.pem"))
    client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    client.ehlo("client.test")
    client.starttls(context=context)
    client.ehlo("client.test")
    return client


def test_smtp_guesses_from_many_clients_never_lock_the_owner_out(site: Site) -> None:
    victim = site.kim
    for n in range(2, 14):  # twelve clients, one wrong token each
        with smtp_from(site, f"127.0.0.{n}") as attacker:
            code, _ = attacker.docmd("AUTH", auth_plain(victim.email, "mv_guess"))
            assert code == 535, f"client 127.0.0.{n} got {code}"

    with smtp_from(site, "127.0.0.1") as owner:
        started = time.monotonic()
        code, text = owner.docmd("AUTH", auth_plain(victim.email, victim.token))
        assert (code, time.monotonic() - started < 0.5) == (235, True), text

    # One client guessing again and again is slowed from its fourth failure on.
    with smtp_from(site, "127.0.0.40") as attacker:
        for _ in range(3):
            assert attacker.docmd("AUTH", auth_plain(victim.email, "mv_guess"))[0] == 535
        started = time.monotonic()
        assert attacker.docmd("AUTH", auth_plain(victim.email, "mv_guess"))[0] == 535
        assert time.monotonic() - started >= 0.5


def test_web_guesses_from_many_clients_never_lock_the_owner_out(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    victim = site.joe
    attackers = [web_client(site, f"127.0.0.{n}") for n in range(2, 10)]  # eight clients
    try:
        for attacker in attackers:
            assert guess(attacker, victim.email, "not-the-password").status_code == 401
        # A client that failed for this account waits while the account is being guessed.
        refused = guess(attackers[0], victim.email, "not-it-either")
        assert refused.status_code == 429 and "try again in" in refused.text
    finally:
        for attacker in attackers:
            attacker.close()

    context = browser.new_context()  # the owner, from 127.0.0.1, which never failed
    try:
        page = context.new_page()
        sign_in(page, site, victim)
        assert victim.email in page.inner_text("header")
    finally:
        context.close()


def test_one_web_client_guessing_one_account_is_refused_after_five(site: Site) -> None:
    with web_client(site, "127.0.0.50") as attacker:
        for _ in range(5):
            assert guess(attacker, site.jane.email, "guess").status_code == 401
        refused = guess(attacker, site.jane.email, "guess")
        assert refused.status_code == 429 and "try again in" in refused.text


def web_client(site: Site, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=site.url, transport=transport, timeout=30)


def guess(client: httpx.Client, email: str, password: str) -> httpx.Response:
    page = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    form = {"csrf": csrf.group(1), "email": email, "password": password, "next": "/"}
    return client.post("/signin", data=form)
