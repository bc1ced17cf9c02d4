"""End to end against `mailvia serve`: a test message is a message. A member's test through
a team channel From an address that is not theirs, or an admin's test through a rep's mailbox
(From the rep's address), is 403 and the test server gets nothing; the member's own address
works and the message is listed with its attempt, flagged test; the channel's budget (1 a
minute) refuses a second test within the minute with a clear reason (429, Retry-After)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, require_console_script

pytestmark = pytest.mark.timeout(180)

JANE, BOSS, MALLORY = "jane@acme.test", "boss@acme.test", "mallory@partner.test"
LISTENING = r"^listening http (http://127\.0\.0\.1:\d+)$"
ORG = ("--org", "acme")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme (domain acme.test) with jane and mallory (members; mallory's own address is at a
    domain acme does not hold) and boss (an admin), each with an API token in tokens.txt."""
    require_console_script()
    data_dir = tmp_path_factory.mktemp("channel-test-template") / "data"
    cli = Cli(data_dir)
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    for email, extra in ((JANE, ()), (MALLORY, ()), (BOSS, ("--admin",))):
        cli.ok("admin", "create-user", email, *ORG, "--team", "sales", *extra)
    tokens = [cli.ok("admin", "create-token", e).stdout.strip() for e in (JANE, MALLORY, BOSS)]
    (data_dir / "tokens.txt").write_text("\n".join(tokens))
    return data_dir


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer("127.0.0.1", 0, maildir=tmp_path / "caught") as server:
        yield server


def test_a_test_message_is_a_message(
    tmp_path: Path, template: Path, sink: ThreadedTestServer
) -> None:
    shutil.copytree(template, tmp_path / "data")
    jane, mallory, boss = (tmp_path / "data" / "tokens.txt").read_text().split("\n")
    cli = Cli(tmp_path / "data")
    plain = ("--host", "127.0.0.1", "--port", str(sink.port), "--security", "none",
             "--auth", "none")  # fmt: skip
    cli.ok("channel", "add", "team-relay", *ORG, "--team", "sales", "--domain", "acme.test",
           *plain, "--budget", "1/60:messages")  # fmt: skip
    cli.ok("channel", "add", "jane-box", *ORG, "--user", JANE, *plain)
    channels = {c["name"]: c["id"] for c in cli.ok("channel", "list", *ORG, "--json").json()}
    process = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        base = process.wait_for_line(LISTENING)[1]
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as http:

            def test(token: str, channel: str, to: str) -> httpx.Response:
                return http.post(
                    f"/v1/channels/{channels[channel]}/test",
                    json={"to": to},
                    headers={"Authorization": f"Bearer {token}"},
                )

            spoofed = test(mallory, "team-relay", "victim@example.com")
            assert spoofed.status_code == 403, spoofed.text
            assert "your own address" in spoofed.json()["detail"]
            as_rep = test(boss, "jane-box", "victim@example.com")
            assert as_rep.status_code == 403, as_rep.text
            assert "jane@acme.test is not one of your sender identities" in as_rep.json()["detail"]
            assert sink.received == []

            own = test(jane, "team-relay", "bob@example.com")
            assert own.status_code == 200 and own.json()["ok"] is True, own.text
            [got] = sink.wait_for(1, timeout=30)
            assert got["mail_from"] == JANE and got["rcpt_to"] == ["bob@example.com"]

            listed = http.get("/v1/messages", headers={"Authorization": f"Bearer {jane}"})
            [message] = [m for m in listed.json()["data"] if m["test"]]
            assert (
                message["state"] == "delivered" and message["channel_id"] == channels["team-relay"]
            )
            shown = http.get(
                f"/v1/messages/{message['id']}", headers={"Authorization": f"Bearer {jane}"}
            ).json()
            [attempt] = shown["attempts"]
            assert attempt["outcome"] == "delivered" and attempt["code"] == 250
            assert shown["envelope"] == {"mail_from": JANE, "rcpt_to": ["bob@example.com"]}

            again = test(jane, "team-relay", "bob@example.com")
            assert again.status_code == 429, again.text
            assert "budgets (1/60:messages) allow no message now" in again.json()["detail"]
            assert 0 < int(again.headers["retry-after"]) <= 60
            assert len(sink.received) == 1
    finally:
        code = process.stop()
    assert code == 0, f"serve exited {code}\n{process.stderr}"
