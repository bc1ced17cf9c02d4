"""`mailvia channel test` and `mailvia channel reconnect` as real subprocesses, against the
project's test SMTP server on 127.0.0.1 (in-process), each test with its own MAILVIA_DATA_DIR
and MAILVIA_ALLOW_PRIVATE_HOSTS=127.0.0.0/8. The password given on stdin never shows."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailvia.testserver import ThreadedTestServer
from support.world import Certs, make_certs

pytestmark = pytest.mark.timeout(180)

MAILVIA = Path(sys.executable).parent / "mailvia"
PASSWORD = "Corr3ct-Horse-Battery"
WRONG = "Wr0ng-Horse-Staple"
ORG = ("--org", "acme")


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Mailvia:
    """The console script on one data folder."""

    def __init__(self, data_dir: Path) -> None:
        if not MAILVIA.exists():
            pytest.skip(f"{MAILVIA} not found: run .venv/bin/pip install -e '.[test]'")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
        self.env |= {
            "MAILVIA_DATA_DIR": str(data_dir),
            "MAILVIA_ALLOW_PRIVATE_HOSTS": "127.0.0.0/8",
            "PYTHONIOENCODING": "utf-8",
        }
        self.cwd = data_dir.parent
        self.outputs: list[str] = []  # everything any command printed

    def __call__(self, *args: str, input: str | None = None) -> Run:
        done = subprocess.run(
            [str(MAILVIA), *args],
            input=input,
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=self.env,
            cwd=self.cwd,
            timeout=60,
        )
        self.outputs += [done.stdout, done.stderr]
        return Run(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, input: str | None = None) -> Run:
        run = self(*args, input=input)
        assert run.code == 0, f"{args} -> {run.code}\n{run.stdout}\n{run.stderr}"
        return run

    def worker(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(MAILVIA), "worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def server(certs: Certs, tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer(
        tls_cert=certs.cert,
        tls_key=certs.key,
        auth={"jane": PASSWORD},
        maildir=tmp_path / "caught",
    ) as srv:
        yield srv


@pytest.fixture
def mailvia(tmp_path: Path, certs: Certs) -> Iterator[Mailvia]:
    cli = Mailvia(tmp_path / "data")
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", "jane@acme.test", "--org", "acme", "--team", "sales")
    ca = tmp_path / "ca.pem"
    ca.write_text(certs.ca_pem)
    yield cli
    for output in cli.outputs:
        assert PASSWORD not in output and WRONG not in output


def add_box(cli: Mailvia, port: int, password: str, ca: Path) -> None:
    # One connection: delivery order is then the release order, which the tests check.
    cli.ok(
        "channel", "add", "box", *ORG, "--host", "127.0.0.1", "--port", str(port),
        "--max-connections", "1",
        "--security", "starttls", "--auth", "plain", "--username", "jane",
        "--password-stdin", "--ca-file", str(ca), "--user", "jane@acme.test",
        input=password + "\n",
    )  # fmt: skip


def test_channel_test_passes_and_fails_with_the_hint(
    mailvia: Mailvia, server: ThreadedTestServer, tmp_path: Path
) -> None:
    add_box(mailvia, server.port, PASSWORD, tmp_path / "ca.pem")

    passed = mailvia("channel", "test", "box", *ORG)
    assert passed.code == 0, passed
    lines = passed.stdout.splitlines()
    marks = [line.split()[:2] for line in lines if line[:1] in "✓✗"]
    assert marks == [["✓", s] for s in ("resolve", "connect", "tls", "ehlo", "auth", "sender")]
    assert any(line.strip().startswith("server: 235") for line in lines)
    assert "TLSv1." in passed.stdout and "extensions: SIZE" in passed.stdout
    assert lines[-1] == "all steps passed"

    with_message = mailvia("channel", "test", "box", *ORG, "--to", "bob@example.com", "--json")
    assert with_message.code == 0, with_message
    report = with_message.json()
    assert report["ok"] and [s["name"] for s in report["steps"]][-1] == "message"
    assert server.wait_for(1, timeout=30)[0]["rcpt_to"] == ["bob@example.com"]

    wrong = mailvia("channel", "test", "box", *ORG, "--password-stdin", input=WRONG + "\n")
    assert wrong.code == 1, wrong
    assert "✗ auth" in wrong.stdout
    assert "server: 535 5.7.8" in wrong.stdout
    assert "hint: Wrong user name or password" in wrong.stdout
    assert wrong.stdout.splitlines()[-1] == "the test failed"

    server.set_faults(["auth=535 5.7.139 Authentication unsuccessful"])
    disabled = mailvia("channel", "test", "box", *ORG, "--json")
    assert disabled.code == 1
    failed = disabled.json()["steps"][-1]
    assert failed["name"] == "auth" and failed["ok"] is False
    assert failed["reply"] == "535 5.7.139 Authentication unsuccessful"
    assert failed["hint"].startswith("SMTP AUTH is disabled for this mailbox or tenant")


def test_channel_test_of_an_unknown_channel_exits_3(mailvia: Mailvia) -> None:
    missing = mailvia("channel", "test", "nope", *ORG)
    assert missing.code == 3 and "no channel" in missing.stderr


def channel_state(cli: Mailvia) -> str:
    return str(cli.ok("channel", "show", "box", *ORG, "--json").json()["state"])


def test_reconnect_after_a_disconnect_releases_the_held_mail(
    mailvia: Mailvia, server: ThreadedTestServer, tmp_path: Path
) -> None:
    add_box(mailvia, server.port, WRONG, tmp_path / "ca.pem")
    for i in range(3):
        mailvia.ok(
            "send", "--user", "jane@acme.test", "--from", "jane@acme.test",
            "--to", "bob@example.com", "--subject", f"held {i}", "--text", "hi",
        )  # fmt: skip
    worker = mailvia.worker()
    try:
        deadline = time.monotonic() + 30
        while channel_state(mailvia) != "disconnected":
            assert time.monotonic() < deadline, "the channel was not disconnected"
            time.sleep(0.2)

        still_wrong = mailvia("channel", "reconnect", "box", *ORG, "--password-stdin", input="x\n")
        assert still_wrong.code == 1
        assert still_wrong.stdout.splitlines()[-1] == "not reconnected: the test failed at auth"
        assert channel_state(mailvia) == "disconnected"

        env = {"BOX_PASSWORD": PASSWORD}
        mailvia.env |= env
        done = mailvia("channel", "reconnect", "box", *ORG, "--password-env", "BOX_PASSWORD")
        assert done.code == 0, done
        assert done.stdout.splitlines()[-1] == "reconnected; 3 held messages released"
        assert channel_state(mailvia) == "active"
        got = server.wait_for(3, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        mailvia.outputs += [out, err]
    subjects = [email.message_from_bytes(e["content"])["Subject"] for e in got]
    assert subjects == ["held 0", "held 1", "held 2"]


def test_a_refused_sender_holds_mail_says_why_and_reconnect_tries_it(
    mailvia: Mailvia, server: ThreadedTestServer, tmp_path: Path
) -> None:
    """A server that refuses the channel's sender at MAIL FROM disconnects it and holds its
    mail: `message show` says why and what to change (no past next attempt), and `channel
    reconnect` fails at the `sender` step until the server takes the address."""
    add_box(mailvia, server.port, PASSWORD, tmp_path / "ca.pem")
    server.set_faults(["mail=550 5.7.1 sender address rejected"])
    sent = mailvia.ok(
        "send", "--user", "jane@acme.test", "--from", "jane@acme.test",
        "--to", "bob@example.com", "--subject", "held", "--text", "hi",
    )  # fmt: skip
    message_id = sent.stdout.split()[-1]
    worker = mailvia.worker()
    try:
        deadline = time.monotonic() + 30
        while channel_state(mailvia) != "disconnected":
            assert time.monotonic() < deadline, "the channel was not disconnected"
            time.sleep(0.2)
        channel = mailvia.ok("channel", "show", "box", *ORG, "--json").json()
        assert channel["state_reason"] == "550 5.7.1 sender address rejected"
        assert channel["state_hint"].startswith("The server refuses this channel's mail itself")

        shown = mailvia.ok("message", "show", message_id, "--json").json()
        assert shown["state"] == "held" and shown["next_attempt_at"] is None
        [recipient] = shown["recipients"]
        assert recipient["state"] == "held"
        assert recipient["reply"]["hint"] == channel["state_hint"]
        text = mailvia.ok("message", "show", message_id).stdout
        assert "next_attempt_at      none" in text
        [waiting] = [line for line in text.splitlines() if line.startswith("waiting ")]
        assert 'channel box is disconnected after the reply "550 5.7.1 sender address' in waiting
        assert "often the sending address is not allowed" in waiting

        again = mailvia("channel", "reconnect", "box", *ORG)
        assert again.code == 1, again
        assert "✗ sender" in again.stdout and "server: 550 5.7.1" in again.stdout
        assert again.stdout.splitlines()[-1] == "not reconnected: the test failed at sender"
        assert channel_state(mailvia) == "disconnected"
        assert server.received == []

        server.set_faults([])
        done = mailvia("channel", "reconnect", "box", *ORG)
        assert done.code == 0, done
        assert "✓ sender" in done.stdout
        assert done.stdout.splitlines()[-1] == "reconnected; 1 held messages released"
        [got] = server.wait_for(1, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        mailvia.outputs += [out, err]
    assert email.message_from_bytes(got["content"])["Subject"] == "held"


def test_channel_show_prints_readable_text(mailvia: Mailvia, tmp_path: Path) -> None:
    """No Python reprs (`{'user': ...}`, `[]`, `None`, `True`) in `channel show`'s text."""
    add_box(mailvia, 2525, PASSWORD, tmp_path / "ca.pem")
    shown = mailvia.ok("channel", "show", "box", *ORG).stdout
    fields = dict(line.split(None, 1) for line in shown.splitlines())
    assert fields["owner"].startswith("user ") and "{" not in fields["owner"]
    assert fields["domains"] == "none" and fields["preset"] == "none"
    assert fields["has_password"] == "yes"
    assert fields["ca_pem"] == "1 certificate added (--json shows the PEM)"
    assert fields["budgets"] == "none" and fields["oauth"] == "none"
    for repr_ in ("{'", "[]", "None", "True", "False"):
        assert repr_ not in shown
    assert mailvia.ok("channel", "show", "box", *ORG, "--json").json()["domains"] == []
