"""SMTP submission's pure parts: the reply table and the self-signed certificate made once in
the data folder (failed logins: tests/unit/test_signins.py)."""

from __future__ import annotations

import random
import ssl
import stat
from pathlib import Path

import pytest

from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidAddress,
    InvalidHeader,
    InvalidInput,
    MessageTooLarge,
    SecretsUnavailable,
    StoreUnavailable,
    Unauthenticated,
)
from mailvia.ingress.smtp.replies import Command, reply_for
from mailvia.ingress.smtp.tls import submission_tls
from mailvia.settings import Settings


@pytest.mark.parametrize(
    ("error", "command", "reply"),
    [
        (InvalidAddress("bad"), Command.MAIL, "501 5.1.7 bad"),
        (InvalidAddress("bad"), Command.RCPT, "553 5.1.3 bad"),
        (InvalidAddress("bad"), Command.DATA, "554 5.6.0 bad"),
        (InvalidHeader("line\r\nbreak"), Command.DATA, "554 5.6.0 line break"),
        (InvalidInput("no From"), Command.DATA, "554 5.6.0 no From"),
        (MessageTooLarge("too big"), Command.DATA, "552 5.3.4 too big"),
        (Forbidden("not yours"), Command.MAIL, "550 5.7.1 not yours"),
        (Unauthenticated("x"), Command.AUTH, "535 5.7.8 Authentication credentials invalid"),
        (StoreUnavailable("db"), Command.DATA, "451 4.3.0"),
        (StoreUnavailable("db"), Command.AUTH, "454 4.7.0 Temporary authentication failure"),
        (SecretsUnavailable("key"), Command.DATA, "451 4.3.0"),
        (Conflict("x"), Command.DATA, "451 4.3.0"),
        (RuntimeError("internals"), Command.OTHER, "451 4.3.0"),
    ],
)
def test_reply_for(error: Exception, command: Command, reply: str) -> None:
    assert reply_for(error, command).startswith(reply)
    if reply[0] == "4":
        assert str(error) not in reply_for(error, command)


def test_a_self_signed_certificate_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    context, cert, self_signed = submission_tls(cert=None, key=None, data_dir=tmp_path)
    assert self_signed and cert == tmp_path / "tls" / "submission.pem"
    assert stat.S_IMODE((tmp_path / "tls" / "submission.key").stat().st_mode) == 0o600
    first = cert.read_bytes()
    assert submission_tls(cert=None, key=None, data_dir=tmp_path)[1].read_bytes() == first
    client = ssl.create_default_context(cafile=str(cert))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # as strict as Python 3.13's default
    for name in ("localhost", "127.0.0.1"):
        handshake(context, client, name)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A TLS handshake in memory; raises ssl.SSLError if the client does not accept it."""
    pipes = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(2)]
    ends = [
        client.wrap_bio(pipes[0][0], pipes[0][1], server_hostname=name),
        server.wrap_bio(pipes[1][0], pipes[1][1], server_side=True),
    ]
    done = [False, False]
    while not all(done):
        for i, end in enumerate(ends):
            try:
                end.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
            pipes[1 - i][0].write(pipes[i][1].read())  # what one end wrote, the other reads


def test_operator_certificate_files_go_together_and_must_load(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="go together"):
        submission_tls(cert=tmp_path / "c.pem", key=None, data_dir=tmp_path)
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(InvalidInput, match="cannot load TLS certificate"):
        submission_tls(cert=tmp_path / "c.pem", key=tmp_path / "k.pem", data_dir=tmp_path)


def test_the_certificate_settings_are_paths() -> None:
    settings = Settings.load(
        {"MAILVIA_SUBMISSION_TLS_CERT": "/etc/c.pem"}, {"submission_tls_key": "/etc/k.pem"}
    )
    assert settings.submission_tls_cert == Path("/etc/c.pem")
    assert settings.submission_tls_key == Path("/etc/k.pem")


def _path_parse(parser: type, arg: str, limit: int = 0) -> object:
    conn = parser.__new__(parser)
    conn.local_part_limit = limit
    try:
        return parser._getaddr(conn, arg)  # type: ignore[attr-defined]
    except Exception as exc:  # aiosmtpd's own parse raises on some inputs
        return type(exc).__name__


def test_the_fast_path_parse_of_mail_and_rcpt_agrees_with_aiosmtpds() -> None:
    from aiosmtpd.smtp import SMTP

    from mailvia.ingress.smtp.server import SubmissionSMTP

    rng = random.Random(7)
    tails = ["", " SIZE=10", "x", ">", " <a@b>", "\t\tBODY=8BITMIME", " (c) X=1", "  (c", " \t"]
    args = [
        "<"
        + "".join(rng.choice("abcZ09.-_+!#'") for _ in range(rng.randint(1, 8)))
        + "@"
        + "".join(rng.choice("ab.-[]1é") for _ in range(rng.randint(1, 8)))
        + ">"
        + rng.choice(tails)
        for _ in range(4_000)
    ]
    args += ["<>", "<a@b.test>", " <a@b.test>", '<"q u"@b.test>', "<@relay:a@b.test>"]
    for arg in args:
        for limit in (0, 3):
            assert _path_parse(SubmissionSMTP, arg, limit) == _path_parse(SMTP, arg, limit), arg


def test_connection_caps_overall_and_per_client() -> None:
    from mailvia.ingress.smtp.connections import ConnectionLimit, client_of

    caps = ConnectionLimit(total=3, per_client=2)
    assert [caps.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert caps.admit("10.0.0.2") and not caps.admit("10.0.0.3")  # 3 in all
    caps.release("10.0.0.1")
    assert caps.held == 2 and caps.admit("10.0.0.3")
    assert client_of(("::ffff:10.0.0.1", 25, 0, 0)) == "10.0.0.1"
    assert client_of(("fe80::1%eth0", 25, 0, 2)) == "fe80::1"
    assert client_of(None) == ""
