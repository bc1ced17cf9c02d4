"""A batch's command lines (transport/pipelining.py) with the quoted addresses kept: the same
lines as aiosmtplib's own quoting, every time, and an unsendable address refused every time
(the line's own check runs on every line; a refusal by the quoting is not kept)."""

from __future__ import annotations

from aiosmtplib.email import quote_address

from mailvia.domain.message import Envelope
from mailvia.transport.pipelining import UNSENDABLE, _quoted, batch


def test_the_lines_are_aiosmtplibs_and_each_address_is_quoted_once() -> None:
    _quoted.cache_clear()
    envelope = Envelope("Notifications <n@example.com>", ("a@example.net", "b@example.net"))
    lines = [batch(envelope, [], "ascii") for _ in range(3)]
    assert lines[0] == lines[1] == lines[2]
    assert lines[0] is not None
    expected = (
        f"MAIL FROM:{quote_address(envelope.mail_from)}\r\n"
        "RCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
    ).encode()
    assert lines[0].commands == expected
    info = _quoted.cache_info()
    assert (info.misses, info.hits) == (3, 6)


def test_an_unsendable_address_is_refused_every_time() -> None:
    _quoted.cache_clear()
    envelope = Envelope("n@example.com", ("ok@example.net", "b\x7f@example.net"))
    for _ in range(2):
        made = batch(envelope, [], "ascii")
        assert made is not None
        assert made.recipients == (("ok@example.net", None), ("b\x7f@example.net", UNSENDABLE))
    # quoting it succeeds (kept); the control character is caught on every line made
    assert _quoted.cache_info().currsize == 3
