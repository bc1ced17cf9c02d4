"""End to end: `mailvia serve` as a real subprocess listens for SMTP submission; a real smtplib
client logs in with an API token over STARTTLS (or implicit TLS) and the message arrives at
the project's test SMTP server. The certificate is the self-signed one `serve` makes in
DATA_DIR/tls/ on first run. Processes are stopped by PID with SIGTERM; waits poll.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, LongRunning, require_console_script

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"
LISTENING = r"^listening {kind} ({scheme}://127\.0\.0\.1:(\d+))$"
CONTENT = (
    b"From: Jane <jane@acme.test>\r\nTo: buyer@example.com\r\nSubject: over submission\r\n"
    b"Message-ID: <e2e@acme.test>\r\n\r\nhello from smtplib\r\n"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Organization `acme` (domain `acme.test`, team `sales`), jane and an API token of hers,
    set up by the CLI: the data folder and the token."""
    require_console_script()
    data_dir = tmp_path_factory.mktemp("submission-template") / "data"
    cli = Cli(data_dir)
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    return data_dir, cli.ok("admin", "create-token", JANE).stdout.strip()


@pytest.fixture
def cli(tmp_path: Path, template: tuple[Path, str]) -> Cli:
    shutil.copytree(template[0], tmp_path / "data")
    return Cli(tmp_path / "data")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer("127.0.0.1", 0, maildir=tmp_path / "caught") as server:
        yield server


@contextmanager
def serving(cli: Cli, *flags: str) -> Iterator[LongRunning]:
    process = cli.start("serve", "--http-listen", "127.0.0.1:0", *flags)
    try:
        process.wait_for_line(LISTENING.format(kind="http", scheme="http"))
        yield process
    finally:
        code = process.stop()
    assert code == 0, f"serve exited {code}\n{process.stderr}"


def trusting(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def submit(client: smtplib.SMTP, token: str) -> dict[str, tuple[int, bytes]]:
    client.login(JANE, token)
    return client.sendmail(JANE, ["buyer@example.com"], CONTENT)


def test_serve_accepts_submission_over_starttls_and_then_implicit_tls(
    cli: Cli, sink: ThreadedTestServer, template: tuple[Path, str]
) -> None:
    cli.ok(
        "channel", "add", "jane-box", "--org", "acme", "--user", JANE, "--host", "127.0.0.1",
        "--port", str(sink.port), "--security", "none", "--auth", "none",
    )  # fmt: skip
    token = template[1]
    cert = cli.data_dir / "tls" / "submission.pem"

    with serving(cli, "--submission-listen", "127.0.0.1:0") as process:
        port = int(process.wait_for_line(LISTENING.format(kind="submission", scheme="smtp"))[2])
        assert f"submission TLS certificate (self-signed): {cert.resolve()}" in process.lines
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=trusting(cert))
            assert submit(client, token) == {}
        [got] = sink.wait_for(1, timeout=30)
    assert got["content"] == CONTENT and got["rcpt_to"] == ["buyer@example.com"]
    key = cli.data_dir / "tls" / "submission.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first_cert = cert.read_bytes()

    flags = ("--submission-listen", "off", "--submissions-listen", "127.0.0.1:0")
    with serving(cli, *flags) as process:
        found = process.wait_for_line(LISTENING.format(kind="submissions", scheme="smtps"))
        assert not any(line.startswith("listening submission ") for line in process.lines)
        with smtplib.SMTP_SSL("127.0.0.1", int(found[2]), context=trusting(cert)) as client:
            assert submit(client, token) == {}
        sink.wait_for(2, timeout=30)
    assert cert.read_bytes() == first_cert  # made once, then reused


def test_a_busy_submission_port_fails_with_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli.run(
            "serve", "--http-listen", "127.0.0.1:0", "--submission-listen", f"127.0.0.1:{port}",
            timeout=30,
        )  # fmt: skip
    assert result.code == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailvia: cannot listen on 127.0.0.1:{port}")


def test_an_unknown_trusted_organization_fails_with_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    result = cli.run(
        "serve", "--http-listen", "127.0.0.1:0", "--trusted-networks", "10.0.0.0/8=nope",
        timeout=30,
    )  # fmt: skip
    assert result.code == 3, str(result)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mailvia: no organization named 'nope'; the organizations"), line


def test_a_mail_client_and_the_api_take_the_same_channel(
    cli: Cli, sink: ThreadedTestServer, template: tuple[Path, str]
) -> None:
    """Both intakes of one running service: each message arrives through jane's channel and
    both are listed by GET /v1/messages; another's From is refused on both."""
    import json
    import urllib.error
    import urllib.request

    cli.ok(
        "channel", "add", "jane-box", "--org", "acme", "--user", JANE, "--host", "127.0.0.1",
        "--port", str(sink.port), "--security", "none", "--auth", "none",
    )  # fmt: skip
    cli.ok("admin", "create-user", "boss@acme.test", "--org", "acme", "--team", "sales")
    token = template[1]
    cert = cli.data_dir / "tls" / "submission.pem"

    def api(method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with serving(cli, "--submission-listen", "127.0.0.1:0") as process:
        base = process.wait_for_line(LISTENING.format(kind="http", scheme="http"))[1]
        port = int(process.wait_for_line(LISTENING.format(kind="submission", scheme="smtp"))[2])
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=trusting(cert))
            assert submit(client, token) == {}
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("boss@acme.test", ["buyer@example.com"], CONTENT)
            assert refused.value.smtp_code == 550
        status, sent = api("POST", "/v1/messages", {
            "from": JANE, "to": ["buyer@example.com"], "subject": "over the API", "text": "hi",
        })  # fmt: skip
        assert status == 202 and sent["channel"]["name"] == "jane-box", sent  # type: ignore[index]
        status, problem = api("POST", "/v1/messages", {
            "from": "boss@acme.test", "to": ["buyer@example.com"], "text": "hi",
        })  # fmt: skip
        assert status == 403, problem
        got = sink.wait_for(2, timeout=30)
        status, listed = api("GET", "/v1/messages")
    assert status == 200
    assert len(listed["data"]) == 2  # type: ignore[arg-type]
    assert {g["rcpt_to"][0] for g in got} == {"buyer@example.com"}
    subjects = sorted(b"over the API" in g["content"] for g in got)
    assert subjects == [False, True]


def test_a_trusted_network_submits_without_auth_and_a_worker_delivers_when_serve_does_not(
    cli: Cli, sink: ThreadedTestServer
) -> None:
    """`--dispatch off`: serve only takes mail in (here from a trusted network, plain SMTP
    without AUTH, as Postfix's smtp-source sends); the message waits queued until a separate
    `mailvia worker` process delivers it."""
    cli.ok(
        "channel", "add", "jane-box", "--org", "acme", "--user", JANE, "--host", "127.0.0.1",
        "--port", str(sink.port), "--security", "none", "--auth", "none",
    )  # fmt: skip
    flags = ("--submission-listen", "127.0.0.1:0", "--trusted-networks", "127.0.0.0/8=acme")
    with serving(cli, *flags, "--dispatch", "off") as process:
        port = int(process.wait_for_line(LISTENING.format(kind="submission", scheme="smtp"))[2])
        assert "dispatch off: run `mailvia worker` to deliver" in process.lines
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.sendmail(JANE, ["buyer@example.com"], CONTENT) == {}
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("someone@example.org", ["buyer@example.com"], CONTENT)
            assert refused.value.smtp_code == 550
        [counts] = cli.ok("queue", "--json").json().values()
        assert counts["queued"] == 1 and sink.received == []
        worker = cli.start("worker", "--allow-private-hosts", "127.0.0.0/8")
        try:
            [got] = sink.wait_for(1, timeout=30)
        finally:
            assert worker.stop() == 0, worker.stderr
    assert got["content"] == CONTENT and got["mail_from"] == JANE
