"""A running `mailvia serve` (a real subprocess) over two tenants, for end-to-end tests of the
intakes: organization acme (domain acme.test, team sales: jane and joe, members, and boss, an
admin) and globex (domain globex.test, team ops: ann, an admin), each with a team channel to a
port where nothing listens (`DISPATCH=off`: mail is only taken in, never delivered).

`tenants(folder)` sets the data folder up with the CLI once (copy it per test);
`serving(cli, ...)` starts `serve` on free ports and stops it by its PID.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.cli import Cli, LongRunning

USERS = {
    "jane": ("jane@acme.test", "acme", "sales", False),
    "joe": ("joe@acme.test", "acme", "sales", False),
    "boss": ("boss@acme.test", "acme", "sales", True),
    "ann": ("ann@globex.test", "globex", "ops", True),
}
HTTP = r"^listening http (http://127\.0\.0\.1:\d+)$"
SUBMISSION = r"^listening submission smtp://127\.0\.0\.1:(\d+)$"


ORGANIZATIONS = {"acme": ("acme.test", "sales"), "globex": ("globex.test", "ops")}


def tenants(data_dir: Path, *names: str) -> dict[str, str]:
    """Make these users (default: all), their organizations and team channels; the API
    token of each user."""
    cli = Cli(data_dir)
    users = {name: USERS[name] for name in names or USERS}
    for org in dict.fromkeys(org for _, org, _, _ in users.values()):
        domain, team = ORGANIZATIONS[org]
        cli.ok("admin", "create-org", org)
        cli.ok("admin", "create-team", team, "--org", org)
        cli.ok("admin", "add-domain", org, domain)
        cli.ok(
            "channel", "add", f"{org}-relay", "--org", org, "--team", team, "--scope", "domain",
            "--domain", domain, "--host", "127.0.0.1", "--port", "9", "--security", "none",
            "--auth", "none",
        )  # fmt: skip
    tokens = {}
    for name, (email, org, team, admin) in users.items():
        cli.ok("admin", "create-user", email, "--org", org, "--team", team, *(["--admin"] * admin))
        tokens[name] = cli.ok("admin", "create-token", email).stdout.strip()
    return tokens


@dataclass
class Served:
    """A running `serve`: its HTTP base URL, submission port, data folder and tokens."""

    process: LongRunning
    base: str
    submission_port: int
    data_dir: Path
    tokens: dict[str, str]

    def client(self, user: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, trust_env=False, **kw)  # type: ignore[arg-type]

    def smtp(self, user: str) -> smtplib.SMTP:
        """A submission client of `user`, logged in over STARTTLS (serve's own certificate)."""
        context = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "submission.pem"))
        client = smtplib.SMTP("127.0.0.1", self.submission_port, timeout=30)
        client.starttls(context=context)
        client.login(USERS[user][0], self.tokens[user])
        return client


@contextmanager
def serving(cli: Cli, tokens: dict[str, str]) -> Iterator[Served]:
    """`serve` on free ports with the CLI's settings, until the block ends (SIGTERM, by PID)."""
    process = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        smtp = int(process.wait_for_line(SUBMISSION)[1])
        base = process.wait_for_line(HTTP)[1]
        yield Served(process, base, smtp, cli.data_dir, tokens)
    finally:
        code = process.stop()
    assert code == 0, f"serve exited {code}\n{process.stderr}"
