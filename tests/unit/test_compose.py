"""Validation at the door: addresses, header injection, sizes, raw messages."""

from __future__ import annotations

import email

import pytest

from mailvia.domain.errors import InvalidAddress, InvalidHeader, InvalidInput, MessageTooLarge
from mailvia.domain.message import Envelope
from mailvia.outbox.compose import Draft, compose, inspect_raw, parse_mailbox

MB = 1024 * 1024


def draft(**kw: object) -> Draft:
    base: dict[str, object] = {
        "from_": "Jane <jane@acme.test>",
        "to": ["bob@example.com"],
        "subject": "hi",
        "text": "hello",
    }
    base.update(kw)
    return Draft(**base)  # type: ignore[arg-type]


def test_compose_builds_a_message_with_envelope_and_ids() -> None:
    c = compose(draft(cc=["c@example.com"], bcc=["hidden@example.com"]), now=0, max_size=MB)
    assert c.envelope == Envelope(
        "jane@acme.test", ("bob@example.com", "c@example.com", "hidden@example.com")
    )
    msg = email.message_from_bytes(c.content)
    assert msg["Message-ID"] and msg["Date"] and msg["Bcc"] is None
    assert b"\r\n" in c.content and b"\n" not in c.content.replace(b"\r\n", b"")


def test_international_addresses_are_allowed() -> None:
    c = compose(draft(to=["jöe@bücher.de"]), now=0, max_size=MB)
    assert c.envelope.rcpt_to == ("jöe@bücher.de",)


def test_a_non_ascii_domain_is_written_as_a_labels_and_only_the_name_encoded() -> None:
    c = compose(
        draft(to=["Jörg <user@bücher.example>"], cc=["a@straße.de"], reply_to="r@日本.jp"),
        now=0,
        max_size=MB,
    )
    assert c.content.isascii()  # not an SMTPUTF8 message: no address needs one
    head = c.content.partition(b"\r\n\r\n")[0].decode()
    assert "To: =?utf-8?q?J=C3=B6rg?= <user@xn--bcher-kva.example>\r\n" in head
    assert "Cc: a@xn--strae-oqa.de\r\n" in head and "Reply-To: r@xn--wgv71a.jp\r\n" in head
    assert c.envelope.rcpt_to == ("user@bücher.example", "a@straße.de")  # stored in Unicode


def test_a_non_ascii_local_part_makes_the_message_smtputf8_with_addresses_in_utf8() -> None:
    c = compose(draft(to=["Jörg <jörg@bücher.example>", "a@bücher.example"]), now=0, max_size=MB)
    head = c.content.partition(b"\r\n\r\n")[0].decode("utf-8")
    assert "To: Jörg <jörg@bücher.example>, a@bücher.example\r\n" in head
    assert "=?utf-8?" not in head


def test_smtputf8_is_decided_by_the_envelope_as_the_session_decides_it() -> None:
    """A Bcc recipient's local part makes the message SMTPUTF8 (it is in the envelope, so
    the session sends SMTPUTF8 too); a Reply-To's alone cannot (not in the envelope: its
    headers would go 8-bit without SMTPUTF8): refused in words."""
    c = compose(draft(bcc=["jörg@bücher.example"]), now=0, max_size=MB)
    assert "jörg@bücher.example" in c.envelope.rcpt_to  # the session sends SMTPUTF8 for it
    with pytest.raises(InvalidAddress, match=r"reply_to 'jörg@bücher\.example': .* SMTPUTF8"):
        compose(draft(reply_to="jörg@bücher.example"), now=0, max_size=MB)
    with_it = compose(draft(to=["ünï@x.test"], reply_to="jörg@bücher.example"), now=0, max_size=MB)
    assert "Reply-To: jörg@bücher.example\r\n" in with_it.content.decode()


@pytest.mark.parametrize(
    "kw",
    [
        {"subject": "hi\r\nBcc: evil@x.test"},
        {"from_": "Jane\r\nBcc: evil@x.test <jane@acme.test>"},
        {"to": ["bob@example.com\r\nRCPT TO:<x@y.test>"]},
        {"headers": {"X-Tag": "a\nBcc: evil@x.test"}},
        {"headers": {"X-Tag": "a\0b"}},
    ],
)
def test_line_breaks_and_nul_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidHeader):
        compose(draft(**kw), now=0, max_size=MB)


@pytest.mark.parametrize(
    "to", ["not-an-address", "a@b>  AUTH=<x>", "bob@example.com> SIZE=1", "a@b.test, c@d.test"]
)
def test_malformed_and_smuggled_addresses_are_refused(to: str) -> None:
    with pytest.raises(InvalidAddress):
        compose(draft(to=[to]), now=0, max_size=MB)


def test_reserved_headers_need_their_own_fields() -> None:
    with pytest.raises(InvalidInput, match="set it with the field bcc"):
        compose(draft(headers={"Bcc": "x@y.test"}), now=0, max_size=MB)
    with pytest.raises(InvalidInput, match="the field reply_to"):
        compose(draft(headers={"Reply-To": "x@y.test"}), now=0, max_size=MB)
    with pytest.raises(InvalidHeader):
        compose(draft(headers={"Bad Name": "x"}), now=0, max_size=MB)


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Message-ID", "mailvia writes it; to write it yourself, send the whole message as raw"),
        ("Date", "mailvia writes it"),
        ("Content-Type", "mailvia writes it"),
        ("Sender", "only a whole message sent as raw carries it (mailvia does not write one)"),
        ("Return-Path", "the receiving server writes it from the envelope's mail_from"),
        ("Received", "the servers the message passes through add it"),
    ],
)
def test_headers_no_field_sets_say_who_writes_them(name: str, said: str) -> None:
    """There is no message_id or date field: the refusal said to "set it with its own field";
    then "mailvia writes it" of Sender, Return-Path and Received too, which it does not."""
    with pytest.raises(InvalidInput) as refused:
        compose(draft(headers={name: "<x@y.test>"}), now=0, max_size=MB)
    assert str(refused.value).startswith(f"header {name}: {said}"), refused.value
    assert "own field" not in str(refused.value)


def test_size_limit() -> None:
    with pytest.raises(MessageTooLarge):
        compose(draft(text="x" * 2000), now=0, max_size=1000)


def test_raw_keeps_bytes_adds_message_id_on_top_and_strips_bcc() -> None:
    raw = (
        b"From: jane@acme.test\nTo: bob@example.com\nBcc: h@example.com,\n g@example.com\n"
        b"Subject: s\n\nbody\n.\nmore\n"
    )
    c = inspect_raw(raw, envelope=None, max_size=MB)
    assert c.envelope.rcpt_to == ("bob@example.com", "h@example.com", "g@example.com")
    assert c.content.startswith(b"Message-ID: <")
    assert b"Bcc" not in c.content and b"g@example.com" not in c.content
    assert c.content.endswith(b"Subject: s\r\n\r\nbody\r\n.\r\nmore\r\n")


def test_raw_with_envelope_keeps_every_byte() -> None:
    raw = b"Message-ID: <1@x>\r\nFrom: jane@acme.test\r\nBcc: keep@x.test\r\n\r\nbody\r\n"
    c = inspect_raw(raw, envelope=Envelope("jane@acme.test", ("b@example.com",)), max_size=MB)
    assert c.content == raw
    assert c.from_address == "jane@acme.test"


@pytest.mark.parametrize(
    "raw",
    [
        b'From: jane@acme.test\r\nTo: "\r\n\r\nbody\r\n',
        b"From: jane@acme.test\r\nTo: :a;\r\n\r\nbody\r\n",
        b"From: \r\n\r\nbody\r\n",
        b"From: jane@acme.test\r\nSubject: " + b"x" * 70_000 + b"\r\n\r\nbody\r\n",
    ],
)
def test_malformed_raw_headers_are_clear_errors(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        inspect_raw(raw, envelope=None, max_size=MB)


@pytest.mark.parametrize("subject", ["a\x85b", "a\u2028b", "a\x1cb", "ab " * 400])
def test_other_line_breaks_and_overlong_values_are_refused(subject: str) -> None:
    with pytest.raises(InvalidHeader):
        compose(draft(subject=subject), now=0, max_size=MB)


def test_raw_headers_in_utf8_give_international_addresses_and_folded_lists() -> None:
    raw = (
        'From: José <josé@exämple.com>\r\nTo: "Last, First" <a@b.com>,\r\n c@d.com\r\n'
        "Cc: =?utf-8?q?J=C3=A9r=C3=B4me?= <j@example.com>\r\n\r\nhi\r\n"
    ).encode()
    composed = inspect_raw(raw, envelope=None, max_size=10_000)
    assert composed.from_address == "josé@exämple.com"
    assert composed.envelope.rcpt_to == ("a@b.com", "c@d.com", "j@example.com")


@pytest.mark.parametrize(
    "raw",
    [
        b"From: X <j\xff@example.com>\r\nTo: a@b.com\r\n\r\nhi\r\n",
        b"From: j@example.com\r\nTo: a\xc3@b.com\r\n\r\nhi\r\n",
    ],
)
def test_raw_header_addresses_that_are_not_utf8_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidAddress, match="not valid UTF-8"):
        inspect_raw(raw, envelope=None, max_size=10_000)


def _raw_from(field: str) -> bytes:
    return (field + "\r\nTo: a@b.test\r\nSubject: x\r\n\r\nhi\r\n").encode()


@pytest.mark.parametrize(
    ("field", "address"),
    [
        ('From: "Doe, John" <me@mine.test>', "me@mine.test"),
        ("From: =?utf-8?q?M=C3=BCller=2C_Hans?= <me@mine.test>", "me@mine.test"),
        ('From: "me@mine.test" <me@mine.test>', "me@mine.test"),
        ("From: me@mine.test (Me)", "me@mine.test"),
    ],
)
def test_from_headers_as_mail_programs_write_them(field: str, address: str) -> None:
    assert inspect_raw(_raw_from(field), envelope=None, max_size=10_000).from_address == address


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("From: =?utf-8?b?PGNlb0B2aWN0aW0udGVzdD4=?= <me@mine.test>", "shows another address"),
        ("From: =?utf-8?q?ceo=40victim.test?= <me@mine.test>", "shows another address"),
        ('From: "<ceo@victim.test>" <me@mine.test>', "shows another address"),
        ("From: ceo@victim.test <me@mine.test>", "exactly one address"),
        ("From: =?utf-8?q?me=0D=0AX=3A_y?= <me@mine.test>", "line breaks"),
        ("From: =?nosuchcharset?q?x?= <me@mine.test>", "encoded word"),
        ("From: me@mine.test\r\nFrom: ceo@victim.test", "more than one From"),
        ("From: a@b.test, c@d.test", "exactly one address"),
    ],
)
def test_from_headers_that_show_another_sender_are_refused(field: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        inspect_raw(_raw_from(field), envelope=None, max_size=10_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bob@example.com", ("", "bob@example.com")),
        (" bob@example.com ", ("", "bob@example.com")),
        ("Bob <bob@example.com>", ("Bob", "bob@example.com")),
        ('"Doe, Bob" <bob@example.com>', ("Doe, Bob", "bob@example.com")),
        ("bob@example.com (Bob)", ("Bob", "bob@example.com")),
    ],
)
def test_an_address_alone_or_with_its_name(text: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(text, "to") == expected


@pytest.mark.parametrize(
    "text", ["bob@example.com junk", "bob@example.com (Bob) x", "bob@example.com and more"]
)
def test_words_after_an_address_are_refused_not_glued_onto_its_domain(text: str) -> None:
    """`bob@example.com junk` once went to bob@example.comjunk (a 202, then a bounce)."""
    with pytest.raises(InvalidAddress, match="give one address"):
        parse_mailbox(text, "to")
    draft = Draft(from_="jane@acme.test", to=[text], text="hi")
    with pytest.raises(InvalidAddress, match=r"to 'bob@example\.com"):
        compose(draft, now=0, max_size=100_000)


@pytest.mark.parametrize("field", ["To", "Cc", "Bcc"])
def test_words_after_an_address_in_a_raw_messages_header_are_refused(field: str) -> None:
    """A raw message without an envelope takes its recipients from its header fields: the
    same gluing (`bob@example.com junk` → bob@example.comjunk) is refused there too; the
    forms that name their addresses as written still go."""
    raw = f"From: jane@acme.test\r\n{field}: bob@example.com junk\r\n\r\nhi\r\n".encode()
    with pytest.raises(InvalidAddress, match=r"'bob@example\.comjunk' is not written"):
        inspect_raw(raw, envelope=None, max_size=100_000)
    fine = b'To: "Doe, J" <j@x.test>, k@y.test (K)\r\nCc: G: a@b.test;\r\n'
    raw = b"From: jane@acme.test\r\n" + fine + b"\r\nhi\r\n"
    envelope = inspect_raw(raw, envelope=None, max_size=100_000).envelope
    assert envelope.rcpt_to == ("j@x.test", "k@y.test", "a@b.test")


def test_a_refused_address_is_quoted_as_given() -> None:
    """The parser keeps only `not` of `not an address`: the error quotes all of it."""
    with pytest.raises(InvalidAddress) as refused:
        parse_mailbox("not an address", "to")
    assert str(refused.value) == "to 'not an address': An email address must have an @-sign."
