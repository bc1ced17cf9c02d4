"""Store trouble, end to end: a crash run (support/crashes.py: `mailvia serve` delivering to the
project's test server, set up by the CLI) whose `serve` also listens for SMTP submission, with
a user who can sign in to the pages, so a test can take the store away (PostgreSQL stopped,
or the data folder full: RLIMIT_FSIZE set on the running `serve` with prlimit) and try every
intake while it is gone.
"""

from __future__ import annotations

import re
import resource
import smtplib
import ssl
from pathlib import Path

import httpx
import sqlalchemy as sa

from support.crashes import HTTP_LINE, JANE, CrashRun

SUBMISSION_LINE = r"^listening submission smtp://127\.0\.0\.1:(\d+)$"
KIM = "kim@acme.test"
COOKIE = "mailvia_session"


class TroubleRun(CrashRun):
    """A crash run whose `serve` also takes SMTP submission; `kim` can sign in to the pages."""

    def __init__(self, folder: Path, **options: object) -> None:
        super().__init__(folder, **options)  # type: ignore[arg-type]
        made = self.cli.ok("admin", "create-user", KIM, "--org", "acme", "--team", "sales")
        found = re.search(r"one-time password: (\S+)", made.stdout)
        assert found, made.stdout
        self.kim_password = found.group(1)
        self.submission_port = 0

    def __enter__(self) -> TroubleRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.serve is None or self.serve.process.poll() is not None:
            self.serve = self.cli.start(
                "serve", "--http-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0",
                *self.dispatch_flags(), log_dir=self.folder,
            )  # fmt: skip
            self.submission_port = int(self.serve.wait_for_line(SUBMISSION_LINE)[1])
            self.url = self.serve.wait_for_line(HTTP_LINE)[1]
        self.start_worker()

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)

    def post(self, subject: str) -> httpx.Response:
        body = {"from": JANE, "to": ["buyer@example.com"], "subject": subject, "text": subject}
        with self.api() as client:
            return client.post("/v1/messages", json=body)

    def smtp(self) -> smtplib.SMTP:
        """jane's submission session, logged in over STARTTLS."""
        cafile = str(self.folder / "data" / "tls" / "submission.pem")
        client = smtplib.SMTP("127.0.0.1", self.submission_port, timeout=30)
        client.starttls(context=ssl.create_default_context(cafile=cafile))
        client.login(JANE, self.token)
        return client

    def signed_in(self) -> httpx.Client:
        """A browser-like client signed in as kim (the one-time password still to change)."""
        client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        page = client.get("/signin").text
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, page
        form = {"csrf": found.group(1), "email": KIM, "password": self.kim_password, "next": "/"}
        client.post("/signin", data=form)
        assert COOKIE in client.cookies
        return client

    def fill_disk(self, limit: int | None) -> None:
        """Limit the size of files `serve` may write (RLIMIT_FSIZE, as a full data folder
        would); None lifts the limit."""
        assert self.serve is not None
        value = resource.RLIM_INFINITY if limit is None else limit
        resource.prlimit(self.serve.pid, resource.RLIMIT_FSIZE, (value, resource.RLIM_INFINITY))

    def workers(self) -> int:
        """How many workers have a row: a worker that stopped cleanly signed off (no row)."""
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM workers")).scalar_one())
        finally:
            engine.dispose()

    def log_lines(self, pattern: str) -> list[str]:
        assert self.serve is not None
        return [line for line in self.serve.stderr.splitlines() if re.search(pattern, line)]


def message(subject: str) -> bytes:
    return (
        f"From: Jane <{JANE}>\r\nTo: buyer@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@acme.test>\r\n\r\n{subject}\r\n"
    ).encode()
