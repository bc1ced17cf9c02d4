"""End to end: errors point to the fix, and `mailvia send --wait` says what each message waits
for. Real `mailvia` subprocesses on their own data folder (organization acme, domain
acme.test, jane in team sales) and the project's test SMTP server on 127.0.0.1.

- serve started without MAILVIA_ALLOW_PRIVATE_HOSTS: the message is held; `send --wait`
  exits 6 at once naming the setting and the process that needs it; `message show`, the API
  (`reply.hint`, the channel's `state_hint`) and Test connection say the same. The reply
  itself stays the one generic refusal.
- a server that requires a sign-in and a channel without one: held, "needs a sign-in" with
  `mailvia channel edit`.
- no process delivering: exit 6 saying so. A deferred message: its last reply and next
  attempt; one behind its channel's budget: until when.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, LongRunning, Result, require_console_script

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"
ORG = ("--org", "acme")
SETTING = "MAILVIA_ALLOW_PRIVATE_HOSTS"
HTTP = r"^listening http (http://127\.0\.0\.1:\d+)$"
REFUSAL = "550 5.4.4 mailvia: will not connect to this host"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_console_script()
    data_dir = tmp_path_factory.mktemp("waiting") / "data"
    cli = Cli(data_dir)
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    return data_dir


@pytest.fixture
def cli(tmp_path: Path, template: Path) -> Cli:
    shutil.copytree(template, tmp_path / "data")
    return Cli(tmp_path / "data")


@contextmanager
def serving(cli: Cli, **env: str) -> Iterator[tuple[LongRunning, str]]:
    """`serve` on free ports with these settings over the CLI's; stopped by its PID."""
    process = Cli(cli.data_dir, **env).start("serve", "--http-listen", "127.0.0.1:0")
    try:
        yield process, process.wait_for_line(HTTP)[1]
    finally:
        process.stop()


def add_channel(cli: Cli, port: int, *extra: str) -> None:
    cli.ok(
        "channel", "add", "jane-mailbox", *ORG, "--user", JANE, "--host", "127.0.0.1",
        "--port", str(port), "--security", "none", "--auth", "none", *extra,
    )  # fmt: skip


def send_and_wait(
    cli: Cli, timeout: str = "30", subject: str = "hello", to: str = "bob@example.com"
) -> Result:
    return cli.run(
        "send", "--user", JANE, "--from", JANE, "--to", to,
        "--subject", subject, "--text", "first message", "--wait", "--timeout", timeout,
        "--json",
    )  # fmt: skip


def explanation(result: Result) -> str:
    """The one line `send --wait` ends with when nothing delivers the message."""
    (line,) = [x for x in result.stderr.splitlines() if "is not being delivered:" in x]
    return line


def api(url: str, cli: Cli) -> httpx.Client:
    token = cli.ok("admin", "create-token", JANE).stdout.strip()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def test_a_refused_private_host_names_the_setting_and_the_process(cli: Cli, tmp_path: Path) -> None:
    with ThreadedTestServer(maildir=tmp_path / "caught") as smtp:
        add_channel(cli, smtp.port)
        with serving(cli, MAILVIA_ALLOW_PRIVATE_HOSTS="") as (_, url):
            sent = send_and_wait(cli)
            assert sent.code == 6, str(sent)
            said = explanation(sent)
            assert SETTING in said and "mailvia serve" in said and "reconnect" in said, said
            assert "jane-mailbox is disconnected" in said and REFUSAL in said, said
            (view,) = sent.json()
            assert view["state"] == "held"

            (recipient,) = view["recipients"]
            assert recipient["reply"]["text"] == "mailvia: will not connect to this host"
            assert SETTING in recipient["reply"]["hint"]
            shown = cli.ok("message", "show", view["id"]).stdout
            assert REFUSAL in shown and SETTING in shown, shown

            with api(url, cli) as jane:
                message = jane.get(f"/v1/messages/{view['id']}").json()
                assert SETTING in message["recipients"][0]["reply"]["hint"], message
                (channel,) = jane.get("/v1/channels").json()["data"]
                assert channel["state_reason"] == REFUSAL
                assert (
                    SETTING in channel["state_hint"] and "mailvia worker" in channel["state_hint"]
                )

        tested = Cli(cli.data_dir, MAILVIA_ALLOW_PRIVATE_HOSTS="").run(
            "channel", "test", "jane-mailbox", *ORG, "--json"
        )
        failed = [s for s in tested.json()["steps"] if not s["ok"]]
        assert failed and SETTING in failed[0]["hint"], tested.stdout
        assert "private" not in failed[0]["detail"].replace("private or reserved", "")
    assert not (tmp_path / "caught" / "received.jsonl").exists()


def test_a_server_that_wants_a_sign_in_says_the_channel_needs_one(cli: Cli, tmp_path: Path) -> None:
    with ThreadedTestServer(auth={"rep": "secret"}, maildir=tmp_path / "caught") as smtp:
        add_channel(cli, smtp.port)
        with serving(cli):
            sent = send_and_wait(cli)
    assert sent.code == 6, str(sent)
    said = explanation(sent)
    assert said.startswith("mailvia: msg_") and "530" in said, said
    assert "This channel needs a sign-in" in said, said
    assert "user name and password" in said and "OAuth" in said, said
    assert "mailvia channel edit" in said, said
    (view,) = sent.json()
    assert view["recipients"][0]["reply"]["code"] == 530
    assert "sign-in" in view["recipients"][0]["reply"]["hint"]


def test_with_nothing_delivering_send_wait_says_so(cli: Cli, tmp_path: Path) -> None:
    with ThreadedTestServer(maildir=tmp_path / "caught") as smtp:
        add_channel(cli, smtp.port)
        sent = send_and_wait(cli, timeout="60")
    assert sent.code == 6, str(sent)
    said = explanation(sent)
    assert "No mailvia process is delivering" in said and "mailvia serve" in said, said
    assert sent.json()[0]["state"] == "queued"


def test_while_waiting_it_says_what_each_message_waits_for(cli: Cli, tmp_path: Path) -> None:
    with ThreadedTestServer(maildir=tmp_path / "caught") as smtp:
        add_channel(cli, smtp.port)
        with serving(cli):
            # serve delivering first: under load its first attempt of a cold start came after
            # the short wait below had ended (no "last reply" line)
            first = send_and_wait(cli, subject="first")
            assert first.code == 0, str(first)
            deferred = send_and_wait(cli, timeout="4", to="tempfail@example.com")
    assert deferred.code == 1, str(deferred)
    lines = deferred.stderr.splitlines()
    assert any(
        'the last reply was "451 4.2.0 Temporary failure"; the next attempt is at' in x
        for x in lines
    ), deferred.stderr
    # the wait timed out, the message did not fail: a rep must not send it again
    stopped = f"stopped waiting after 4 s: {deferred.json()[0]['id']} is still deferred"
    assert any(stopped in x and "mailvia goes on with it" in x for x in lines), deferred.stderr


def test_a_message_behind_its_channels_budget_says_until_when(cli: Cli, tmp_path: Path) -> None:
    with ThreadedTestServer(maildir=tmp_path / "caught") as smtp:
        add_channel(cli, smtp.port, "--budget", "1/3600")
        with serving(cli):
            first = send_and_wait(cli, subject="first")
            assert first.code == 0, str(first)
            second = send_and_wait(cli, timeout="3", subject="second")
    assert second.code == 1, str(second)
    assert "Waiting behind channel jane-mailbox's sending limit until " in second.stderr, str(
        second
    )
    view: dict[str, Any] = second.json()[0]
    assert view["state"] == "queued"
