"""End-to-end tests of the `mailvia` command line, run as real subprocesses.

Each test has its own MAILVIA_DATA_DIR under tmp_path (most start from a copy of one data
folder that the CLI itself set up: organization `acme` with domain `acme.test`, team
`sales`, member `jane@acme.test`, and organization `globex` with `globex.test`), and
MAILVIA_ALLOW_PRIVATE_HOSTS=127.0.0.0/8. Mail goes to the project's test SMTP server on
127.0.0.1 (in-process `ThreadedTestServer`, or the `mailvia testserver` command). Every
background process is stopped by its PID with SIGTERM; waits poll with a deadline.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, LongRunning, Result, poll, require_console_script

pytestmark = pytest.mark.timeout(180)

ORG = ("--org", "acme")
JANE = "jane@acme.test"
MESSAGE_ID = re.compile(r"^msg_[0-9a-z]+$")
LISTENING_HTTP = r"^listening http (http://127\.0\.0\.1:(\d+))$"


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="session")
def template_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder set up once through the CLI; tests get a copy of it."""
    require_console_script()
    data_dir = tmp_path_factory.mktemp("template") / "data"
    cli = Cli(data_dir)
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    cli.ok("admin", "create-org", "globex")
    cli.ok("admin", "add-domain", "globex", "globex.test")
    return data_dir


@pytest.fixture
def cli(tmp_path: Path, template_data_dir: Path) -> Cli:
    """The CLI on this test's own copy of the template data folder."""
    data_dir = tmp_path / "data"
    shutil.copytree(template_data_dir, data_dir)
    return Cli(data_dir)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    """The project's test SMTP server on 127.0.0.1 (no TLS, no AUTH)."""
    with ThreadedTestServer("127.0.0.1", 0, maildir=tmp_path / "caught") as server:
        yield server


@contextmanager
def serving(cli: Cli) -> Iterator[tuple[LongRunning, str]]:
    """`mailvia serve` on a free port; yields the process and its URL; stops it by PID."""
    process = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        url = process.wait_for_line(LISTENING_HTTP).group(1)
        yield process, url
    finally:
        code = process.stop()
    assert code == 0, f"serve exited {code}\n{process.stderr}"


def http_get(url: str) -> tuple[int, Any]:
    """GET without any proxy from the environment; returns status and the parsed JSON."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    """The exit code, one `mailvia: ...` line on stderr naming the problem, no traceback."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailvia: "), str(result)
    for needle in needles:
        assert needle in lines[0], str(result)


def add_plain_channel(cli: Cli, name: str, port: int, *extra: str) -> dict[str, Any]:
    """An address channel for jane to the test server, security none, auth none."""
    result = cli.ok(
        "channel", "add", name, *ORG, "--user", JANE, "--host", "127.0.0.1",
        "--port", str(port), "--security", "none", "--auth", "none", *extra, "--json",
    )  # fmt: skip
    return result.json()  # type: ignore[no-any-return]


def show_message(cli: Cli, message_id: str) -> dict[str, Any]:
    return cli.ok("message", "show", message_id, "--json").json()  # type: ignore[no-any-return]


def wait_for_state(cli: Cli, message_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = show_message(cli, message_id)
        return view if view["state"] == state else None

    return poll(check, timeout=timeout, interval=0.2)


def received_log(maildir: Path) -> list[dict[str, Any]]:
    path = maildir / "received.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_address(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["address"]: r for r in view["recipients"]}


# --- serve --------------------------------------------------------------------------------


def test_serve_bootstraps_an_empty_data_dir_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cli = Cli(data_dir)

    first = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        match = first.wait_for_line(LISTENING_HTTP)
        url, port = match.group(1), int(match.group(2))
        assert port != 0
        output = "\n".join(first.lines)
        password = re.search(r"one-time password: (\S+)", output)
        token = re.search(r"API token[^:]*: (mv_\S+)", output)
        assert password and token, output
        assert output.count(password.group(1)) == 1 and output.count(token.group(1)) == 1

        bootstrap = data_dir / "bootstrap.txt"
        assert stat.S_IMODE(bootstrap.stat().st_mode) == 0o600
        written = bootstrap.read_text()
        assert password.group(1) in written and token.group(1) in written
        assert "admin@localhost" in written

        status, body = http_get(f"{url}/healthz")
        assert status == 200 and body["status"] == "ok", body
    finally:
        started = time.monotonic()
        code = first.stop()
        stopped_in = time.monotonic() - started
    assert code == 0, first.stderr
    assert stopped_in < 5.0, f"SIGTERM took {stopped_in:.1f}s"
    assert "Traceback" not in first.stderr, first.stderr

    second = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        url = second.wait_for_line(LISTENING_HTTP).group(1)
        assert http_get(f"{url}/healthz")[0] == 200
    finally:
        code = second.stop()
    assert code == 0, second.stderr
    again = "\n".join(second.lines)
    assert "one-time password" not in again and "mv_" not in again, again
    assert token.group(1) not in again and password.group(1) not in again
    assert bootstrap.read_text() == written


def test_serve_on_a_busy_port_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = Cli(tmp_path / "data").run("serve", "--http-listen", f"127.0.0.1:{port}",
                                            timeout=30)  # fmt: skip
    assert result.code != 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert result.stderr.strip().startswith("mailvia: "), str(result)


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    result = Cli(tmp_path / "data").run("serve", "--http-listen", "127.0.0.1:99999", timeout=30)
    assert_one_line_error(result, 2, "HTTP_LISTEN")


def test_serve_refuses_a_bad_api_rate_limit(tmp_path: Path) -> None:
    result = Cli(tmp_path / "data").run("serve", "--api-rate-limit", "fast", timeout=30)
    assert_one_line_error(result, 2, "API_RATE_LIMIT", "COUNT/SECONDS")


# --- admin --------------------------------------------------------------------------------


def test_admin_creates_organizations_teams_users_identities_and_tokens(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")

    org = cli.ok("admin", "create-org", "acme")
    assert re.fullmatch(r"org_[0-9a-z]+", org.stdout.strip()), str(org)
    team = cli.ok("admin", "create-team", "sales", "--org", "acme")
    assert re.fullmatch(r"team_[0-9a-z]+", team.stdout.strip()), str(team)
    domain = cli.ok("admin", "add-domain", "acme", "ACME.test")
    assert "acme.test" in domain.stdout and "acme" in domain.stdout

    user = cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    assert re.search(r"^created jane@acme\.test \(member\) usr_", user.stdout, re.M), str(user)
    password = re.search(r"^one-time password: (\S{8,})$", user.stdout, re.M)
    assert password, str(user)
    admin = cli.ok("admin", "create-user", "boss@acme.test", "--org", "acme", "--team", "sales",
                   "--admin")  # fmt: skip
    assert "(admin)" in admin.stdout
    other_password = re.search(r"one-time password: (\S+)", admin.stdout)
    assert other_password and other_password.group(1) != password.group(1)

    granted = cli.ok("admin", "grant", JANE, "sales@acme.test")
    assert "sales@acme.test" in granted.stdout
    granted = cli.ok("admin", "grant", JANE, "@acme.test")
    assert "@acme.test" in granted.stdout

    token = cli.ok("admin", "create-token", JANE)
    assert re.fullmatch(r"mv_[A-Za-z0-9_-]{32,}", token.stdout.strip()), str(token)
    assert len(token.lines) == 1


def test_admin_errors_are_one_clear_line_with_the_documented_exit_code(cli: Cli) -> None:
    assert_one_line_error(cli.run("admin", "create-team", "x", "--org", "nope"), 3, "nope")
    assert_one_line_error(
        cli.run("admin", "add-domain", "globex", "acme.test"), 4, "another organization"
    )
    assert_one_line_error(cli.run("admin", "grant", JANE, "jane@globex.test"), 2, "globex.test")
    assert_one_line_error(cli.run("admin", "grant", JANE, "@elsewhere.test"), 2, "elsewhere")

    reserved = cli.run("admin", "create-org", "_platform")
    assert reserved.code != 0, str(reserved)
    assert "reserved" in reserved.stderr and "Traceback" not in reserved.stderr, str(reserved)


def test_a_domain_typed_as_a_labels_is_stored_and_found_as_addresses_hold_it(cli: Cli) -> None:
    added = cli.ok("admin", "add-domain", "acme", "XN--BCHER-KVA.test")
    assert added.stdout.strip() == "bücher.test now belongs to acme", str(added)
    assert_one_line_error(
        cli.run("admin", "add-domain", "globex", "bücher.test"), 4, "another organization"
    )
    granted = cli.ok("admin", "grant", JANE, "@xn--bcher-kva.test")
    assert "@bücher.test" in granted.stdout, str(granted)
    route = cli.ok(
        "route", "explain", "--user", JANE, "--from", "jane@xn--bcher-kva.test", "--json"
    ).json()
    assert "refused" not in route, route


# --- channels -----------------------------------------------------------------------------


def test_channel_presets_in_text_and_json(cli: Cli) -> None:
    text = cli.ok("channel", "presets")
    line = next(x for x in text.lines if x.startswith("microsoft365"))
    assert "smtp.office365.com" in line and "30/60:messages" in line, line

    presets = {p["name"]: p for p in cli.ok("channel", "presets", "--json").json()}
    m365 = presets["microsoft365"]
    assert m365["host"] == "smtp.office365.com" and m365["port"] == 587
    assert m365["scope"] == "address"
    assert m365["budgets"] == ["30/60:messages", "10000/86400:recipients"]
    assert {"gmail", "sparkpost", "sendgrid", "mailgun", "ses", "postmark"} <= set(presets)


def test_channel_password_comes_from_stdin_or_env_and_is_never_shown(cli: Cli) -> None:
    secret = "stdin-S3cret-" + "q7x2p9"
    added = cli.run(
        "channel", "add", "jane-box", *ORG, "--user", JANE, "--host", "127.0.0.1",
        "--port", "2525", "--username", "jane", "--password-stdin", "--json",
        input=secret + "\n",
    )  # fmt: skip
    assert added.code == 0, str(added)
    assert secret not in added.stdout + added.stderr
    view = added.json()
    assert view["has_password"] is True and "password" not in view
    assert view["scope"] == "address" and view["address"] == JANE

    env_secret = "env-S3cret-" + "m4k8r1"
    cli.ok("admin", "grant", JANE, "jane.env@acme.test")  # one own channel per address
    from_env = cli.run(
        "channel", "add", "jane-env", *ORG, "--user", JANE, "--address", "jane.env@acme.test",
        "--host", "127.0.0.1",
        "--port", "2526", "--username", "jane", "--password-env", "MV_E2E_SMTP_PASSWORD",
        env={"MV_E2E_SMTP_PASSWORD": env_secret},
    )  # fmt: skip
    assert from_env.code == 0, str(from_env)
    assert env_secret not in from_env.stdout + from_env.stderr

    outputs = []
    for name in ("jane-box", "jane-env"):
        shown = cli.ok("channel", "show", name, *ORG, "--json")
        assert shown.json()["has_password"] is True, str(shown)
        assert "password" not in shown.json()
        outputs.append(shown)
    outputs.append(cli.ok("channel", "show", "jane-box", *ORG))
    listed = cli.ok("channel", "list", *ORG, "--json")
    assert {c["name"] for c in listed.json()} == {"jane-box", "jane-env"}
    outputs += [listed, cli.ok("channel", "list", *ORG)]
    for result in outputs:
        assert secret not in result.stdout + result.stderr, str(result)
        assert env_secret not in result.stdout + result.stderr, str(result)

    # Sealed at rest: neither password is anywhere in the data folder in clear.
    for path in cli.data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert secret.encode() not in content, path
            assert env_secret.encode() not in content, path

    unset = cli.run(
        "channel", "add", "x", *ORG, "--user", JANE, "--host", "127.0.0.1", "--username", "j",
        "--password-env", "MV_E2E_NOT_SET",
    )  # fmt: skip
    assert_one_line_error(unset, 2, "MV_E2E_NOT_SET")
    on_command_line = cli.run("channel", "add", "x", *ORG, "--password", secret)
    assert on_command_line.code == 2 and "Traceback" not in on_command_line.stderr


def test_microsoft365_preset_warns_and_is_never_a_team_channel(cli: Cli) -> None:
    env = {"MV_E2E_M365_PASSWORD": "m365-pw"}
    added = cli.run(
        "channel", "add", "jane-m365", *ORG, "--preset", "microsoft365", "--user", JANE,
        "--username", JANE, "--password-env", "MV_E2E_M365_PASSWORD", "--json", env=env,
    )  # fmt: skip
    assert added.code == 0, str(added)
    assert "warning:" in added.stderr and "Each rep connects their own mailbox" in added.stderr
    view = added.json()
    assert view["preset"] == "microsoft365"
    assert (view["host"], view["port"], view["security"]) == ("smtp.office365.com", 587, "starttls")
    assert (view["scope"], view["address"], view["has_password"]) == ("address", JANE, True)
    assert view["budgets"] == [
        {"count": 30, "per_seconds": 60, "unit": "messages"},
        {"count": 10000, "per_seconds": 86400, "unit": "recipients"},
    ]

    team = cli.run(
        "channel", "add", "sales-m365", *ORG, "--preset", "microsoft365", "--team", "sales",
        "--username", JANE, "--password-env", "MV_E2E_M365_PASSWORD", env=env,
    )  # fmt: skip
    assert_one_line_error(team, 4, "each rep connects their own")


def test_plaintext_channels_need_auth_none_and_a_private_host(cli: Cli) -> None:
    base = ("channel", "add", "clear", *ORG, "--user", JANE, "--port", "2525")
    with_auth = cli.run(*base, "--host", "127.0.0.1", "--security", "none", "--auth", "plain",
                        "--username", "jane")  # fmt: skip
    assert_one_line_error(with_auth, 2, "auth none")

    public = cli.run(*base, "--host", "192.0.2.10", "--security", "none", "--auth", "none")
    assert public.code != 0, str(public)
    assert_one_line_error(public, public.code, "ALLOW_PRIVATE_HOSTS")

    narrowed = cli.run(
        *base, "--host", "127.0.0.1", "--security", "none", "--auth", "none",
        env={"MAILVIA_ALLOW_PRIVATE_HOSTS": "10.0.0.0/8"},
    )  # fmt: skip
    assert narrowed.code != 0, str(narrowed)
    assert "ALLOW_PRIVATE_HOSTS" in narrowed.stderr

    allowed = cli.run(*base, "--host", "127.0.0.1", "--security", "none", "--auth", "none")
    assert allowed.code == 0, str(allowed)


def test_pause_holds_mail_resume_releases_it_and_remove_waits_for_pending_mail(
    cli: Cli, smtp: ThreadedTestServer
) -> None:
    add_plain_channel(cli, "box", smtp.port)
    with serving(cli):
        paused = cli.ok("channel", "pause", "box", *ORG)
        assert "paused" in paused.stdout

        sent = cli.ok("send", "--user", JANE, "--from", JANE, "--to", "held@x.test",
                      "--subject", "later", "--text", "wait for it")  # fmt: skip
        (message_id,) = sent.lines
        assert MESSAGE_ID.match(message_id), str(sent)
        assert "paused" in sent.stderr, str(sent)

        view = show_message(cli, message_id)
        assert view["state"] == "held", view
        assert by_address(view)["held@x.test"]["state"] == "held"
        assert smtp.received == []

        refused = cli.run("channel", "remove", "box", *ORG)
        assert_one_line_error(refused, 4)

        resumed = cli.ok("channel", "resume", "box", *ORG)
        assert "active" in resumed.stdout and "1 messages released" in resumed.stdout
        smtp.wait_for(1, timeout=20)
        view = wait_for_state(cli, message_id, "delivered")
        assert by_address(view)["held@x.test"]["reply"]["code"] == 250

    removed = cli.ok("channel", "remove", "box", *ORG)
    assert "removed box" in removed.stdout


# --- send and delivery --------------------------------------------------------------------


def test_send_route_queue_and_message_show_through_a_running_service(
    cli: Cli, smtp: ThreadedTestServer, tmp_path: Path
) -> None:
    channel = add_plain_channel(cli, "box", smtp.port)

    explained = cli.ok("route", "explain", "--user", JANE, "--from", JANE)
    assert "box" in explained.stdout and "chosen" in explained.stdout, str(explained)
    route = cli.ok("route", "explain", "--user", JANE, "--from", JANE, "--json").json()
    assert route["channel"]["name"] == "box" and route["channel"]["id"] == channel["id"]
    assert route["steps"] and any(s["verdict"] == "chosen" for s in route["steps"]), route

    refused = [
        (("--from", "bob@acme.test", "--to", "a@x.test"), 4),  # not one of jane's identities
        (("--from", "jane@globex.test", "--to", "a@x.test"), 4),  # another org's domain
        (("--from", JANE, "--to", "not-an-address"), 2),
    ]
    for args, code in refused:
        result = cli.run("send", "--user", JANE, *args, "--text", "x")
        assert_one_line_error(result, code)
        assert result.stdout == "", str(result)

    with serving(cli):
        sent = cli.run(
            "send", "--user", JANE, "--from", JANE, "--to", "bob@example.com",
            "--subject", "hello", "--text", "first message", "--wait", "--timeout", "30", "--json",
        )  # fmt: skip
        assert sent.code == 0, str(sent)
        (view,) = sent.json()
        assert view["state"] == "delivered", view
        assert view["channel_id"] == channel["id"]
        assert by_address(view)["bob@example.com"]["state"] == "delivered"
        logged = received_log(smtp.maildir)
        assert [(r["mail_from"], r["rcpt_to"]) for r in logged] == [(JANE, ["bob@example.com"])]

        files = []
        for n in range(3):
            eml = tmp_path / f"m{n}.eml"
            eml.write_bytes(
                f"From: {JANE}\r\nTo: file{n}@example.com\r\nSubject: file {n}\r\n"
                f"Message-ID: <file{n}@acme.test>\r\n\r\nbody {n}\r\n".encode()
            )
            files.append(str(eml))
        batch = cli.run("send", "--user", JANE, *files)
        assert batch.code == 0, str(batch)
        assert len(batch.lines) == 3 and all(MESSAGE_ID.match(x) for x in batch.lines), str(batch)
        assert len(set(batch.lines)) == 3
        smtp.wait_for(4, timeout=20)
        assert sorted(r["rcpt_to"][0] for r in received_log(smtp.maildir)[1:]) == [
            "file0@example.com",
            "file1@example.com",
            "file2@example.com",
        ]
        last = wait_for_state(cli, batch.lines[-1], "delivered")

        queue = cli.ok("queue", "--json").json()
        assert sum(queue[channel["id"]].values()) == 4, queue
        assert queue[channel["id"]]["delivered"] >= 2, queue
        queue_text = cli.ok("queue")
        assert "box" in queue_text.stdout and "delivered" in queue_text.stdout

        shown = cli.ok("message", "show", last["id"])
        assert last["id"] in shown.stdout and "recipients:" in shown.stdout
        assert "attempts:" in shown.stdout
        rows = [x for x in shown.lines if "file2@example.com" in x]
        assert len(rows) == 2 and all("delivered" in x for x in rows), shown.stdout
        assert any(" 250 " in x for x in rows), shown.stdout
        assert [a["outcome"] for a in last["attempts"]] == ["delivered"]


def test_send_over_starttls_with_auth_to_the_testserver_command(cli: Cli, tmp_path: Path) -> None:
    smtp_password = "rep-" + "k3y9z"
    maildir = tmp_path / "caught"
    server = cli.start(
        "testserver", "--listen", "127.0.0.1:0", "--self-signed", "--auth",
        f"jane:{smtp_password}", "--maildir", str(maildir),
    )  # fmt: skip
    try:
        match = server.wait_for_line(r"^listening (smtp://127\.0\.0\.1:(\d+))$")
        assert server.lines[-1] == match.group(0), server.lines  # the last startup line
        ca = next(x.split(" ", 1)[1] for x in server.lines if x.startswith("ca-cert "))
        added = cli.run(
            "channel", "add", "jane-tls", *ORG, "--user", JANE, "--host", "127.0.0.1",
            "--port", match.group(2), "--security", "starttls", "--auth", "plain",
            "--username", "jane", "--password-stdin", "--ca-file", ca, "--json",
            input=smtp_password + "\n",
        )  # fmt: skip
        assert added.code == 0, str(added)
        assert added.json()["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
        assert smtp_password not in added.stdout + added.stderr

        with serving(cli):
            sent = cli.run(
                "send", "--user", JANE, "--from", JANE, "--to", "buyer@example.com",
                "--subject", "over tls", "--text", "hi", "--wait", "--timeout", "30", "--json",
            )  # fmt: skip
            assert sent.code == 0, str(sent)
            assert sent.json()[0]["state"] == "delivered", sent.stdout
            poll(lambda: received_log(maildir), timeout=30)
    finally:
        code = server.stop()
    assert code == 0, server.stderr
    assert [r["rcpt_to"] for r in received_log(maildir)] == [["buyer@example.com"]]
    sessions = [json.loads(x) for x in (maildir / "sessions.jsonl").read_text().splitlines()]
    assert any(s["tls"] and s["auth_user"] == "jane" for s in sessions), sessions


def _send_to_permfail_and_good(cli: Cli, smtp: ThreadedTestServer) -> Result:
    add_plain_channel(cli, "box", smtp.port)
    with serving(cli):
        return cli.run(
            "send", "--user", JANE, "--from", JANE, "--to", "permfail@x.test",
            "--to", "good@x.test", "--subject", "two", "--text", "one bounces",
            "--wait", "--timeout", "30", "--json",
        )  # fmt: skip


def test_a_bounced_recipient_and_a_delivered_one_are_reported_each(
    cli: Cli, smtp: ThreadedTestServer
) -> None:
    sent = _send_to_permfail_and_good(cli, smtp)
    assert sent.code in (0, 1), str(sent)
    (waited,) = sent.json()
    view = show_message(cli, waited["id"])
    recipients = by_address(view)
    assert recipients["permfail@x.test"]["state"] == "bounced", view
    reply = recipients["permfail@x.test"]["reply"]
    assert (reply["code"], reply["enhanced"]) == (550, "5.1.1"), reply
    assert recipients["good@x.test"]["state"] == "delivered", view
    assert view["state"] == "delivered"  # terminal, and one recipient was delivered
    outcomes = {(a["recipient"], a["outcome"], a["code"]) for a in view["attempts"]}
    assert ("permfail@x.test", "bounce", 550) in outcomes, view["attempts"]
    assert [r["rcpt_to"] for r in received_log(smtp.maildir)] == [["good@x.test"]]

    shown = cli.ok("message", "show", waited["id"])
    assert re.search(r"permfail@x\.test\s+bounced\s+550 5\.1\.1", shown.stdout), shown.stdout


def test_send_wait_exits_1_when_not_every_recipient_was_delivered(
    cli: Cli, smtp: ThreadedTestServer
) -> None:
    sent = _send_to_permfail_and_good(cli, smtp)
    assert sent.json()[0]["state"] == "delivered"  # the send itself behaved as above
    assert sent.code == 1, str(sent)
    # stderr says which recipient was not delivered and why (stdout stays the message)
    said = f"{sent.json()[0]['id']}: delivered to 1 of 2 recipients; permfail@x.test: 550 5.1.1"
    assert said in sent.stderr and "(bounced)" in sent.stderr, sent.stderr
