"""Secrets at rest, end to end: a channel password is found in no form in the database files
(WAL included), the logs or any output, while a marker in a non-secret field is found by the
same search; rotating the master key keeps the channel working; a wrong key fails closed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mailvia.secrets import encode_key, new_master_key
from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, poll
from support.world import make_certs

PASSWORD = "Sup3r-s3cret-pw!"  # the secret the test hunts for
MARKER = "marker-user-7f3a"  # stored in a non-secret field (the username)


def forms(secret: str, user: str) -> list[bytes]:
    """The password plain, base64, and inside AUTH PLAIN and AUTH LOGIN exchanges."""
    raw = secret.encode()
    plain = base64.b64encode(b"\0" + user.encode() + b"\0" + raw)
    return [raw, base64.b64encode(raw), plain, raw.hex().encode(), secret.encode("utf-16-le")]


def haystacks(data_dir: Path, outputs: list[str]) -> list[tuple[str, bytes]]:
    files = [(str(p), p.read_bytes()) for p in sorted(data_dir.rglob("*")) if p.is_file()]
    return files + [(f"output {i}", text.encode()) for i, text in enumerate(outputs)]


def test_a_password_is_found_in_no_form_and_rotation_keeps_the_channel_working(
    tmp_path: Path,
) -> None:
    certs = make_certs(tmp_path / "certs")
    ca = tmp_path / "ca.pem"
    ca.write_text(certs.ca_pem)
    cli = Cli(tmp_path / "data")
    outputs: list[str] = []

    def run(*args: str, **kw: str) -> str:
        result = cli.ok(*args, **kw)
        outputs.extend([result.stdout, result.stderr])
        return result.stdout

    with ThreadedTestServer(
        tls_cert=certs.cert, tls_key=certs.key, auth={MARKER: PASSWORD}, maildir=tmp_path / "caught"
    ) as smtp:
        run("admin", "create-org", "acme")
        run("admin", "create-team", "sales", "--org", "acme")
        run("admin", "add-domain", "acme", "acme.test")
        run("admin", "create-user", "jane@acme.test", "--org", "acme", "--team", "sales")
        run(
            "channel",
            "add",
            "box",
            "--org",
            "acme",
            "--user",
            "jane@acme.test",
            "--host",
            "localhost",
            "--port",
            str(smtp.port),
            "--username",
            MARKER,
            "--password-stdin",
            "--ca-file",
            str(ca),
            input=PASSWORD + "\n",
        )
        run("channel", "show", "box", "--org", "acme", "--json")
        run("channel", "list", "--org", "acme", "--json")
        run("channel", "test", "box", "--org", "acme")
        serve = cli.start("serve", "--http-listen", "127.0.0.1:0")
        try:
            serve.wait_for_line(r"^listening http ")
            send = [
                "send",
                "--user",
                "jane@acme.test",
                "--from",
                "jane@acme.test",
                "--to",
                "bob@example.com",
                "--text",
                "hi",
                "--wait",
                "--json",
            ]
            sent = json.loads(run(*send))
            assert sent[0]["state"] == "delivered"
            run("message", "show", sent[0]["id"], "--json")
        finally:
            assert serve.stop() == 0
        outputs += [*serve.lines, serve.stderr]
        assert smtp.sessions[-1]["auth_user"] == MARKER  # AUTH really happened

        everything = haystacks(cli.data_dir, outputs)
        assert any(name.endswith("-wal") or name.endswith(".db") for name, _ in everything)
        assert any(MARKER.encode() in blob for _, blob in everything), "the search works"
        for name, blob in everything:
            for form in forms(PASSWORD, MARKER):
                assert form not in blob, f"{form!r} found in {name}"

        # Rotate the master key: the channel keeps working under the new key.
        old_key = (cli.data_dir / "master.key").read_text()
        run("secrets", "rotate")
        assert (cli.data_dir / "master.key").read_text() != old_key
        assert (cli.data_dir / "master.key").stat().st_mode & 0o777 == 0o600
        run("channel", "test", "box", "--org", "acme")
        worker = cli.start("worker")
        try:
            again = json.loads(run(*send[:-1], "--json"))
            poll(lambda: len(smtp.received) >= 2 or None)
        finally:
            worker.stop()
        assert again[0]["id"]

    # A wrong master key fails closed, with a clear message and no traceback.
    (cli.data_dir / "master.key").write_text(encode_key(new_master_key()) + "\n")
    refused = cli.run("channel", "list", "--org", "acme")
    assert refused.code == 5, str(refused)
    assert "master key" in refused.stderr and "Traceback" not in refused.stderr
    refused = cli.run("serve", "--http-listen", "127.0.0.1:0", timeout=30)
    assert refused.code == 5 and "wrong key" in refused.stderr, str(refused)
