"""The setup pages' end-to-end plumbing: a real `mailvia serve` subprocess with its bootstrap
admin and reps jane, joe and kim (organization `default`, domain acme.test), each with an API
token, and the steps a person takes in the browser (sign in, fill the connect form, press a
button and wait for the answer)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mailvia.testserver import ThreadedTestServer
from support.browser import check_page
from support.cli import Cli, LongRunning, require_console_script
from support.world import Certs, make_certs


@dataclass
class Account:
    email: str
    password: str  # the one-time password until the first sign-in changes it
    token: str = ""


@dataclass
class Site:
    url: str
    cli: Cli
    serve: LongRunning
    certs: Certs
    admin: Account
    jane: Account
    joe: Account
    kim: Account

    def api(self, account: Account) -> httpx.Client:
        headers = {"Authorization": f"Bearer {account.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


JANE_PASSWORD = "Corr3ct-Horse-Battery"  # jane's password at the site's mailbox server


@contextmanager
def mailbox_server(site: Site, folder: Path) -> Iterator[ThreadedTestServer]:
    """The test SMTP server a rep's channel points at: STARTTLS with the site's test CA's
    certificate, user jane (JANE_PASSWORD), what it takes kept in `folder`/caught."""
    with ThreadedTestServer(
        "127.0.0.1",
        0,
        tls_cert=site.certs.cert,
        tls_key=site.certs.key,
        auth={"jane": JANE_PASSWORD},
        maildir=folder / "caught",
    ) as server:
        yield server


@contextmanager
def serving(root: Path, *flags: str, **env: str) -> Iterator[Site]:
    """`mailvia serve` on a free port with the users above; stopped (SIGTERM) at the end.
    `flags` come last (e.g. `--submission-listen 127.0.0.1:0` to listen for submission);
    `env`: more MAILVIA_* settings for every command."""
    require_console_script()
    cli = Cli(root / "data", **env)
    serve = cli.start("serve", "--http-listen", "127.0.0.1:0", "--submission-listen", "off", *flags)
    try:
        url = serve.wait_for_line(r"^listening http (http://\S+)$").group(1)
        boot = (root / "data" / "bootstrap.txt").read_text()
        admin = Account(
            "admin@localhost",
            _found(r"one-time password: (\S+)", boot),
            _found(r"api token: (\S+)", boot),
        )
        cli.ok("admin", "add-domain", "default", "acme.test")
        reps = [_rep(cli, name) for name in ("jane", "joe", "kim")]
        yield Site(url, cli, serve, make_certs(root / "certs"), admin, *reps)
    finally:
        serve.stop()


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return match.group(1)


def _rep(cli: Cli, name: str) -> Account:
    email = f"{name}@acme.test"
    made = cli.ok("admin", "create-user", email, "--org", "default", "--team", "default")
    password = _found(r"one-time password: (\S+)", made.stdout)
    return Account(email, password, cli.ok("admin", "create-token", email).stdout.strip())


def sign_in(page: Any, site: Site, account: Account, *, check: str | None = None) -> None:
    """Sign in; on a first sign-in, change the one-time password as the page insists."""
    page.goto(site.url + "/signin")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    press(page, "Sign in")
    page.wait_for_load_state()
    if page.url.endswith("/password"):
        assert "one-time password" in page.inner_text("main")
        if check:
            check_page(page, check)
        new = account.password + "-changed-by-the-rep"
        page.get_by_label("Current password").fill(account.password)
        page.get_by_label("New password", exact=True).fill(new)
        page.get_by_label("New password again").fill(new)
        press(page, "Change password")  # then on to where the user starts (/start for admins)
        assert "Password changed." in page.inner_text("main")
        account.password = new
    assert "/signin" not in page.url and "/password" not in page.url, page.url


def fill_smtp(page: Any, site: Site, smtp: ThreadedTestServer, password: str) -> None:
    """Point the connect form at the test server, trusting the test CA."""
    page.get_by_label("SMTP server name (host)").fill("127.0.0.1")
    page.get_by_label("Port").fill(str(smtp.port))
    page.get_by_label("Security").select_option("starttls")
    page.get_by_label("Sign-in method").select_option("plain")
    page.get_by_label("User name").fill("jane")
    page.get_by_label("Password", exact=True).fill(password)
    page.locator("summary", has_text="Advanced").click()
    page.get_by_label("Certificate authority (PEM)").fill(site.certs.ca_pem)


def press(page: Any, button: str) -> None:
    """Click a submit button and wait for the page the server answers with."""
    with page.expect_navigation():
        page.get_by_role("button", name=button, exact=True).click()


def report(page: Any) -> str:
    """The Test connection report on the page (failing with the page's text without one)."""
    found = page.locator("section.report")
    assert found.count() == 1, page.inner_text("main")
    return str(found.inner_text())


def send(site: Site, account: Account, subject: str) -> str:
    body = {
        "from": account.email,
        "to": ["bob@example.com"],
        "subject": subject,
        "text": "hello from the web tests",
    }
    with site.api(account) as api:
        answer = api.post("/v1/messages", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def reloaded(page: Any) -> bool:
    page.reload()
    return True


def activity_shows(page: Any, site: Site, message_id: str, state: str) -> bool:
    """Whether the message's page shows it in this state (its code, beside the plain words)."""
    page.goto(f"{site.url}/activity/{message_id}")
    return page.locator("dl.settings .state").first.get_attribute("data-state") == state
