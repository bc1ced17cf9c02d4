"""`mailvia admin set-org`: the organization's default channel and fallback policy."""

from __future__ import annotations

from pathlib import Path

from support.cli import Cli


def test_default_channel_and_fallback(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "default", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", "jane@acme.test", "--org", "acme", "--team", "default")
    cli.ok(
        "channel",
        "add",
        "relay",
        "--org",
        "acme",
        "--team",
        "default",
        "--domain",
        "acme.test",
        "--host",
        "127.0.0.1",
        "--port",
        "2525",
        "--security",
        "none",
        "--auth",
        "none",
    )
    out = cli.ok("admin", "set-org", "acme", "--default-channel", "relay", "--fallback", "next")
    assert "fallback next" in out.stdout
    explained = cli.ok(
        "route", "explain", "--user", "jane@acme.test", "--from", "jane@acme.test", "--json"
    ).json()
    assert explained["channel"]["name"] == "relay"
    missing = cli.run("admin", "set-org", "acme", "--default-channel", "nope")
    assert missing.code == 3 and "no channel 'nope'" in missing.stderr
