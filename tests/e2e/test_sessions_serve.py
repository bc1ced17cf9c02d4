"""End to end: the pages' sessions end on the server. A session cookie copied before signing
out, or before the password changed in another browser, no longer signs anyone in. A real
`mailvia serve` subprocess, Debian's headless Chromium, and httpx replaying a copied cookie."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.browser import chromium
from support.pages import Site, press, serving, sign_in

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(180)]

COOKIE = "mailvia_session"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("sessions")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def copied_cookie(context: Any) -> str:
    [value] = [c["value"] for c in context.cookies() if c["name"] == COOKIE]
    return str(value)


def replay(site: Site, cookie: str, path: str = "/channel") -> httpx.Response:
    """GET `path` with a copied session cookie, following redirects."""
    with httpx.Client(base_url=site.url, cookies={COOKIE: cookie}, timeout=30) as client:
        return client.get(path, follow_redirects=True)


def signed_in_as(response: httpx.Response, email: str) -> bool:
    return response.status_code == 200 and f'<span class="who">{email}</span>' in response.text


def test_a_cookie_copied_before_signing_out_no_longer_works(site: Site, browser: Any) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, site, site.jane)
        cookie = copied_cookie(context)
        assert signed_in_as(replay(site, cookie), site.jane.email)  # the copy works, for now
        press(page, "Sign out")
        assert "You are signed out." in page.inner_text("main")
    finally:
        context.close()
    after = replay(site, cookie)
    assert after.url.path == "/signin" and not signed_in_as(after, site.jane.email)
    assert 'action="/signin"' in after.text


def test_a_password_change_ends_the_users_other_sessions(site: Site, browser: Any) -> None:
    first, second = browser.new_context(), browser.new_context()
    try:
        one, two = first.new_page(), second.new_page()
        sign_in(one, site, site.joe)  # changes the one-time password
        sign_in(two, site, site.joe)
        copied = copied_cookie(second)
        assert signed_in_as(replay(site, copied), site.joe.email)

        one.goto(site.url + "/password")
        new = site.joe.password + "-and-again"
        one.get_by_label("Current password").fill(site.joe.password)
        one.get_by_label("New password", exact=True).fill(new)
        one.get_by_label("New password again").fill(new)
        press(one, "Change password")
        assert "Password changed." in one.inner_text("main")
        site.joe.password = new

        two.goto(site.url + "/channel")
        assert re.search(r"/signin", two.url), two.url
        assert not signed_in_as(replay(site, copied), site.joe.email)
        one.goto(site.url + "/channel")  # the browser that changed it stays signed in
        assert "/channel" in one.url and site.joe.email in one.inner_text("header")
    finally:
        first.close()
        second.close()
