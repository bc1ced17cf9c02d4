"""OAuth secrets at rest, end to end: with a real `mailvia serve`, `mailvia worker` and the
fake providers (subprocesses), an organization's client secret and a mailbox's access and
refresh tokens (those first granted and those renewed) are found in no form in the database
files (WAL included), the logs, the API's answers, the pages or the CLI's output, while
non-secret fields are found by the same search; `secrets rotate` re-wraps them and the
mailbox keeps renewing its token with the organization's app afterwards."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from mailvia.secrets import Vault, decode_key
from support.cli import poll
from support.fake_process import FakeProcess, fake_process
from support.pages import Account, Site, serving
from support.world import make_certs

pytestmark = pytest.mark.timeout(300)

CLIENT_ID = "acme-secrets.apps.example"
CLIENT_SECRET = "GOCSPX-client-secret-of-acme-Zq81"
JANE = "jane@acme.test"


def forms(secret: str) -> list[bytes]:
    """A secret as it could leak: plain, base64 (also inside an XOAUTH2 exchange), hex,
    URL-quoted, UTF-16."""
    raw = secret.encode()
    sasl = f"user={JANE}\x01auth=Bearer {secret}\x01\x01".encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        base64.b64encode(sasl),
        raw.hex().encode(),
        quote(secret, safe="").encode(),
        secret.encode("utf-16-le"),
    ]


def stored_tokens(site: Site) -> set[str]:
    """The mailbox's tokens now, opened with the master key (what a thief would need)."""
    data = site.cli.data_dir
    vault = Vault(decode_key((data / "master.key").read_text()))
    with sqlite3.connect(data / "mailvia.db") as db:
        rows = db.execute("SELECT access, refresh FROM oauth_tokens").fetchall()
    return {vault.open(blob).decode() for row in rows for blob in row if blob}


def signed_in(site: Site, account: Account) -> httpx.Client:
    """A client with the rep's session (the one-time password changed on the way)."""
    client = httpx.Client(base_url=site.url, timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text)
    assert csrf
    form = {"csrf": csrf.group(1), "email": account.email, "password": account.password}
    assert client.post("/signin", data=form).headers["location"] == "/password"
    new = account.password + "-changed"
    page = client.get("/password").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    form = {"csrf": csrf.group(1), "current": account.password, "new": new, "again": new}
    assert client.post("/password", data=form).status_code == 303
    account.password = new
    return client


def connect_gmail(site: Site, fake: FakeProcess, client: httpx.Client) -> tuple[str, str]:
    """Connect Gmail over SMTP XOAUTH2; returns the channel id and the pages seen."""
    start = client.get("/oauth/google/start", params={"transport": "smtp"})
    authorize = start.headers["location"]
    params = dict(parse_qsl(urlsplit(authorize).query))
    allowed = httpx.post(
        authorize.split("?")[0], data=params | {"account": JANE, "decision": "allow"}
    )
    back = urlsplit(allowed.headers["location"])
    done = client.get(f"{back.path}?{back.query}")
    found = re.match(r"^/channels/([^?]+)", done.headers["location"])
    assert found, done.text
    page = client.get(done.headers["location"]).text
    return found.group(1), page


def point_at_fake_smtp(site: Site, channel_id: str, port: int, ca_pem: str) -> None:
    """The fake's SMTP side stands in for smtp.gmail.com (no command changes a host)."""
    with sqlite3.connect(site.cli.data_dir / "mailvia.db", timeout=10) as db:
        db.execute(
            "UPDATE channels SET host = '127.0.0.1', port = ?, ca_pem = ?, max_connections = 1 "
            "WHERE id = ?",
            (port, ca_pem, channel_id),
        )


def send(site: Site, outputs: list[str], subject: str) -> None:
    sent = site.cli.ok(
        "send", "--user", JANE, "--from", JANE, "--to", "bob@example.com",
        "--subject", subject, "--text", "hello", "--json",
    )  # fmt: skip
    outputs += [sent.stdout, sent.stderr]


def received(fake: FakeProcess, count: int) -> list[dict[str, object]]:
    return poll(lambda: r if len(r := fake.control("GET", "received")) >= count else None)


def test_oauth_secrets_are_found_in_no_form_and_rotation_keeps_the_mailbox_working(
    tmp_path: Path,
) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = ["--listen", "127.0.0.1:0", "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    with fake_process(tmp_path, "--client", f"google={CLIENT_ID}:{CLIENT_SECRET}", *tls) as fake:
        assert fake.smtp_port is not None
        env = {k: v for k, v in fake.settings.items() if k.startswith("MAILVIA_OAUTH_")}
        outputs: list[str] = []
        tokens: set[str] = set()
        (tmp_path / "site").mkdir()
        with serving(tmp_path / "site", **env) as site:
            made = site.cli.ok(
                "admin", "oauth-app", "default", "google", "--client-id", CLIENT_ID,
                "--client-secret-stdin", input=CLIENT_SECRET + "\n",
            )  # fmt: skip
            outputs += [made.stdout, made.stderr]
            jane = signed_in(site, site.jane)
            try:
                channel_id, page = connect_gmail(site, fake, jane)
            finally:
                jane.close()
            outputs.append(page)
            point_at_fake_smtp(site, channel_id, fake.smtp_port, certs.ca_pem)
            send(site, outputs, "first")
            received(fake, 1)
            tokens |= stored_tokens(site)
            with site.api(site.jane) as api:
                outputs += [
                    api.get("/v1/channels").text,
                    api.get(f"/v1/channels/{channel_id}").text,
                ]
            with site.api(site.admin) as api:
                outputs.append(api.get("/v1/organization/oauth/google").text)
            site.serve.stop()
            outputs += [*site.serve.lines, site.serve.stderr]

            # The provider expires the token; a worker (a new process, a new SMTP session)
            # is refused, renews it once with the organization's app, and delivers.
            fake.control("POST", "expire", {"account": JANE})
            for round_, subject in ((1, "second"), (2, "third")):
                worker = site.cli.start("worker")
                try:
                    send(site, outputs, subject)
                    received(fake, round_ + 1)
                finally:
                    worker.stop()
                outputs += [*worker.lines, worker.stderr]
                assert fake.refreshes() == round_
                tokens |= stored_tokens(site)
                if round_ == 1:  # rotate the master key; the app secret and tokens re-wrapped
                    rotated = site.cli.ok("secrets", "rotate")
                    outputs += [rotated.stdout, rotated.stderr]
                    fake.control("POST", "expire", {"account": JANE})
            for args in (("channel", "list", "--json"), ("channel", "show", channel_id, "--json")):
                shown = site.cli.ok(*args)
                outputs += [shown.stdout, shown.stderr]
            assert json.loads(shown.stdout)["oauth"]["address"] == JANE

        assert len(tokens) >= 4  # two access tokens renewed after the first, and the refresh
        data = site.cli.data_dir
        everything = [(str(p), p.read_bytes()) for p in sorted(data.rglob("*")) if p.is_file()]
        everything += [(f"output {i}", text.encode()) for i, text in enumerate(outputs)]
        assert any(name.endswith("-wal") or name.endswith(".db") for name, _ in everything)
        assert any(CLIENT_ID.encode() in blob for name, blob in everything if ".db" in name)
        assert any(JANE.encode() in blob for _, blob in everything), "the search works"
        for secret in (CLIENT_SECRET, *tokens):
            for form in forms(secret):
                for name, blob in everything:
                    assert form not in blob, f"a secret ({form[:6]!r}...) found in {name}"
