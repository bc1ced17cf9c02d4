"""End to end: `--org` may be left out, and every "not found" names where it looked and what
is there, in the CLI and the API alike. Real `mailvia` subprocesses on one data folder: the
bootstrap's `default` organization (no domain), acme (acme.test: jane, channel jane-mailbox)
and, for the ambiguous cases, globex (globex.test: ann, channel ops-relay)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from support.cli import Cli, Result, require_console_script
from support.served import HTTP

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"


def add(cli: Cli, name: str, user: str, *org: str) -> Result:
    return cli.run(
        "channel", "add", name, *org, "--user", user, "--host", "127.0.0.1", "--port", "9",
        "--security", "none", "--auth", "none",
    )  # fmt: skip


def stderr_line(result: Result, code: int) -> str:
    assert result.code == code, str(result)
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    require_console_script()
    cli = Cli(tmp_path / "data")
    cli.ok("admin", "create-org", "default")  # what serve's bootstrap makes
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    return cli


def test_org_is_inferred_from_the_user_and_from_the_only_sending_organization(cli: Cli) -> None:
    added = add(cli, "jane-mailbox", JANE)  # no --org: jane's organization
    assert added.code == 0, str(added)
    listed = cli.ok("channel", "list")  # no --org: acme, the one with a sending domain
    assert "jane-mailbox" in listed.stdout, str(listed)
    assert "jane-mailbox" in cli.ok("channel", "show", "jane-mailbox").stdout

    missing = stderr_line(cli.run("channel", "show", "jane-box"), 3)
    assert missing == (
        "mailvia: no channel 'jane-box' in organization acme; its channels: jane-mailbox"
    )
    elsewhere = stderr_line(cli.run("channel", "show", "jane-mailbox", "--org", "default"), 3)
    assert (
        elsewhere
        == "mailvia: no channel 'jane-mailbox' in organization default; it has no channels"
    )


def test_the_only_organization_is_meant_even_before_it_has_a_domain(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "alone")
    cli.ok("admin", "create-org", "acme")  # no `default`: the data folder's only organization
    missing = stderr_line(cli.run("channel", "show", "nosuch"), 3)
    assert missing == "mailvia: no channel 'nosuch' in organization acme; it has no channels"


def test_with_several_organizations_the_channel_name_decides_or_org_is_asked_for(
    cli: Cli,
) -> None:
    assert add(cli, "jane-mailbox", JANE).code == 0
    cli.ok("admin", "create-org", "globex")
    cli.ok("admin", "create-team", "ops", "--org", "globex")
    cli.ok("admin", "add-domain", "globex", "globex.test")
    cli.ok("admin", "create-user", "ann@globex.test", "--org", "globex", "--team", "ops")
    assert add(cli, "ops-relay", "ann@globex.test").code == 0

    assert "ops-relay" in cli.ok("channel", "show", "ops-relay").stdout  # only globex has it
    asked = stderr_line(cli.run("channel", "list"), 2)
    assert "several organizations (acme, globex): give --org" in asked, asked
    nowhere = stderr_line(cli.run("channel", "pause", "nope"), 3)
    assert nowhere == (
        "mailvia: no channel 'nope' in any organization; "
        "the channels: jane-mailbox (acme), ops-relay (globex)"
    )


def test_unknown_organization_and_user_say_what_exists(cli: Cli) -> None:
    org = stderr_line(cli.run("channel", "list", "--org", "acm"), 3)
    assert org == "mailvia: no organization named 'acm'; the organizations: acme, default"
    user = stderr_line(add(cli, "box", "joe@acme.test"), 3)
    assert user == "mailvia: no user 'joe@acme.test' in organization acme; its users: " + JANE
    stranger = stderr_line(add(cli, "box", "joe@nowhere.test"), 3)
    assert "no user 'joe@nowhere.test' in any organization (the organizations: acme" in stranger
    team = stderr_line(
        cli.run("admin", "create-user", "x@acme.test", "--org", "acme", "--team", "sale"), 3
    )
    assert team == "mailvia: no team 'sale' in organization acme; its teams: sales"
    message = stderr_line(cli.run("message", "show", "msg_nope"), 3)
    assert message == "mailvia: no message 'msg_nope' in the outbox (of any organization)"


def test_the_api_says_the_same(cli: Cli) -> None:
    assert add(cli, "jane-mailbox", JANE).code == 0
    token = cli.ok("admin", "create-token", JANE).stdout.strip()
    serve = cli.start("serve", "--http-listen", "127.0.0.1:0")
    try:
        base = serve.wait_for_line(HTTP)[1]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, trust_env=False) as jane:
            channel = jane.get("/v1/channels/jane-box")
            assert channel.status_code == 404, channel.text
            assert channel.json()["detail"] == (
                "no channel 'jane-box' in organization acme; its channels: jane-mailbox"
            )
            message = jane.get("/v1/messages/msg_nope")
            assert message.status_code == 404
            assert message.json()["detail"] == (
                "no message 'msg_nope' among those you may see in organization acme"
            )
    finally:
        assert serve.stop() == 0, serve.stderr
