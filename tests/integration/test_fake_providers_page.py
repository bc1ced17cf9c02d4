"""The fake providers as people meet them: the `mailvia testserver --fake-providers` command
in a subprocess, and the consent page in a real headless Chromium."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from mailvia.testserver.fake import FakeProviders
from support.browser import chromium, violations
from support.cli import Cli
from support.fake_providers import auth_params, endpoint, exchange, pkce

# -- the command -----------------------------------------------------------------------------

SETTINGS = [
    "MAILVIA_OAUTH_GOOGLE_AUTHORIZE_URL",
    "MAILVIA_OAUTH_GOOGLE_TOKEN_URL",
    "MAILVIA_OAUTH_GOOGLE_REVOKE_URL",
    "MAILVIA_OAUTH_GOOGLE_USERINFO_URL",
    "MAILVIA_OAUTH_GOOGLE_JWKS_URL",
    "MAILVIA_GMAIL_API_URL",
    "MAILVIA_OAUTH_MICROSOFT_AUTHORIZE_URL",
    "MAILVIA_OAUTH_MICROSOFT_TOKEN_URL",
    "MAILVIA_OAUTH_MICROSOFT_JWKS_URL",
    "MAILVIA_GRAPH_API_URL",
]


def test_the_command_prints_the_settings_then_listening(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    server = cli.start(
        "testserver",
        "--fake-providers",
        "--listen-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--maildir",
        str(tmp_path / "mail"),
        "--fault",
        "graph_send*1=503",
        "--client",
        "google=known-client:its-secret",
    )
    try:
        origin = server.wait_for_line(r"^listening (http://127\.0\.0\.1:\d+)$").group(1)
        lines = server.lines
        last = lines[-1]
        printed = dict(line.split("=", 1) for line in lines if line.startswith("MAILVIA_"))
        assert list(printed) == SETTINGS
        assert (
            printed["MAILVIA_OAUTH_MICROSOFT_TOKEN_URL"] == origin + "/{tenant}/oauth2/v2.0/token"
        )
        assert printed["MAILVIA_GMAIL_API_URL"] == origin
        assert lines[-1] == last and lines[-2].startswith("listening smtp://127.0.0.1:")
        keys = httpx.get(printed["MAILVIA_OAUTH_GOOGLE_JWKS_URL"]).json()["keys"]
        assert keys[0]["kty"] == "RSA" and keys[0]["kid"]
        params = auth_params("google", pkce(), client_id="unknown-client")
        page = httpx.get(printed["MAILVIA_OAUTH_GOOGLE_AUTHORIZE_URL"], params=params)
        assert page.status_code == 401  # only the --client given is known
    finally:
        assert server.stop() == 0


def test_the_command_refuses_fake_options_without_fake_providers(tmp_path: Path) -> None:
    result = Cli(tmp_path / "data").run("testserver", "--account", "a@b.test")
    assert result.code == 2 and "--account needs --fake-providers" in result.stderr
    result = Cli(tmp_path / "data").run("testserver", "--fake-providers", "--fault", "token=200")
    assert result.code == 2 and "bad fault action" in result.stderr


# -- the consent page in Chromium ------------------------------------------------------------


class Callback:
    """The client's redirect_uri: a real HTTP server that keeps each callback's query."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/oauth/callback":  # not /favicon.ico
                    callback.queries.append(dict(parse_qsl(parts.query)))
                body = b"<!doctype html><title>connected</title><p>Connected.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def callback() -> Iterator[Callback]:
    served = Callback()
    yield served
    served.close()


@pytest.mark.chromium
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_allow_in_chromium_lands_on_the_redirect_uri_with_a_working_code(
    fake_providers: FakeProviders, callback: Callback, provider: str
) -> None:
    pair = pkce()
    params = auth_params(provider, pair, redirect_uri=callback.url, login_hint="rep@acme.test")
    url = endpoint(fake_providers, provider, "authorize") + "?" + urlencode(params)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        assert page.input_value("#account") == "rep@acme.test"
        assert violations(page) == []
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(callback.url + "?**")
        assert page.text_content("p") == "Connected."
    [query] = callback.queries
    assert query["state"] == "st-1"
    tokens = exchange(
        fake_providers, provider, query["code"], pair.verifier, redirect_uri=callback.url
    )
    assert tokens.status_code == 200 and tokens.json()["access_token"]
    [consent] = fake_providers.consents()
    assert consent.account == "rep@acme.test"


@pytest.mark.chromium
def test_deny_in_chromium_sends_access_denied(
    fake_providers: FakeProviders, callback: Callback
) -> None:
    params = auth_params("google", pkce(), redirect_uri=callback.url)
    url = endpoint(fake_providers, "google", "authorize") + "?" + urlencode(params)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("button", name="Deny").click()
        page.wait_for_url(callback.url + "?**")
    assert callback.queries == [{"error": "access_denied", "state": "st-1"}]
    assert fake_providers.consents() == []
