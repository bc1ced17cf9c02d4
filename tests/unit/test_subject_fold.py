"""A composed Subject reads back as it was given, whatever its length and script: no empty
encoded word (`=?utf-8?q??=`), no character split across two words, no word written inside
another, no blank lost or added, no line over 78 characters, in a message sent with SMTPUTF8
or without. Python's email policy folded long subjects mixing Japanese, accented Latin and
blanks with all of these (outbox/compose.py `_set_subject`)."""

from __future__ import annotations

import email
import random
import re
from email import policy
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailvia.domain.errors import InvalidHeader
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.headers import SUBJECT_MAX, subject_of

PIECES = ("日本語の件名", "テスト", "éàü ", "Grüße aus Köln ", "naïve café ", "ß", "—", "😀")
PIECES += (" ", "  ", "word ", "Re: ", "x" * 10, "a")
TAILS = ("日本語の件名テスト" * 12, "é" * 90, " é" * 60, "a é" * 40, "Grüße  aus  Köln " * 8)
SENDERS = {"ascii": "jane@acme.test", "smtputf8": "jörg@acme.test"}
EMPTY_WORD = re.compile(r"=\?utf-8\?[qb]\?\?=", re.IGNORECASE)
ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[qb]\?[^?\s]*\?=", re.IGNORECASE)


def _mixed(rng: random.Random, length: int) -> str:
    text = ""
    while len(text) < length:
        text += rng.choice(PIECES)
    return text[:length].strip() or "x"


def _subjects() -> list[str]:
    """Mixed subjects of 60 to 200 characters, and ASCII words of every length before a
    tail that is not ASCII (the fold falls at each place of the first line in turn); none
    begins or ends with a blank (which a reader drops after the colon)."""
    rng = random.Random(2026)
    mixed = [_mixed(rng, length) for length in range(60, 201) for _ in range(2)]
    edges = [
        (lead * count + tail)[:998].strip()
        for tail in TAILS
        for lead, counts in (("A", range(0, 121)), ("word ", range(0, 25)))
        for count in counts
    ]
    return mixed + edges


def _subject_field(content: bytes) -> str:
    head = content.partition(b"\r\n\r\n")[0].decode("utf-8")
    found = re.search(r"^Subject:.*?(?=\r\n(?![ \t]))", head, re.MULTILINE | re.DOTALL)
    assert found is not None, head
    return found.group(0)


def assert_reads_back(subject: str, sender: str) -> None:
    draft = Draft(from_=sender, to=["bob@example.com"], subject=subject, text="hi")
    content = compose(draft, now=1_800_000_000.0, max_size=10**7).content
    field = _subject_field(content)
    assert not EMPTY_WORD.search(field), (subject, field)
    assert all(len(line) <= 78 for line in field.split("\r\n")), (subject, field)
    # RFC 2047 §2: an encoded word at most 75 characters, a line holding one at most 76
    words = ENCODED_WORD.findall(field)
    assert all(len(word) <= 75 for word in words), (subject, field)
    lines = [line for line in field.split("\r\n") if ENCODED_WORD.search(line)]
    assert all(len(line) <= 76 for line in lines), (subject, field)
    assert not field.startswith("Subject:\r\n"), (subject, field)  # not folded before a word
    read = email.message_from_bytes(content, policy=policy.default)["Subject"]
    assert read == subject, (subject, field)
    if sender.isascii():  # encoded words only: decoded by the older interface too
        value = field.removeprefix("Subject:").replace("\r\n", "")
        assert str(make_header(decode_header(value))).strip() == subject, (subject, field)
    assert subject_of(content) == " ".join(subject.split())[:SUBJECT_MAX]


SUBJECTS = _subjects()


@pytest.mark.parametrize("sender", SENDERS.values(), ids=SENDERS.keys())
def test_long_mixed_subjects_read_back_as_given(sender: str) -> None:
    assert len(SUBJECTS) > 1_000
    for subject in SUBJECTS:
        assert_reads_back(subject, sender)


@settings(max_examples=200, deadline=None)
@given(
    subject=st.lists(st.sampled_from(PIECES), min_size=1, max_size=80)
    .map("".join)
    .map(str.strip)
    .filter(bool),
    sender=st.sampled_from(sorted(SENDERS.values())),
)
def test_any_subject_of_these_pieces_reads_back(subject: str, sender: str) -> None:
    assert_reads_back(subject[:998].strip(), sender)


def test_a_short_subject_is_written_as_before() -> None:
    """One line, as it is: ASCII, and any text in an SMTPUTF8 message."""
    for sender, subject, written in (
        ("jane@acme.test", "hello", "Subject: hello"),
        ("jörg@acme.test", "Grüße aus Köln", "Subject: Grüße aus Köln"),
        ("jane@acme.test", "", "Subject:"),
    ):
        draft = Draft(from_=sender, to=["bob@example.com"], subject=subject, text="hi")
        content = compose(draft, now=1_800_000_000.0, max_size=10**7).content
        assert _subject_field(content).rstrip() == written


@pytest.mark.parametrize("field", ["subject", "text", "html", "from", "header X-Tag"])
def test_an_undecodable_byte_is_a_clear_refusal(field: str) -> None:
    """A command line's argument in another encoding (`--subject $'caf\\xe9'`) reaches Python
    as a lone surrogate: refused with the field named, never a UnicodeEncodeError."""
    bad = "caf\udce9"
    fields: dict[str, object] = {"from_": "jane@acme.test", "subject": "s", "text": "t"}
    if field == "from":
        fields["from_"] = f"{bad} <jane@acme.test>"
    elif field == "header X-Tag":
        fields["headers"] = {"X-Tag": bad}
    else:
        fields[field] = bad
    draft = Draft(to=["bob@example.com"], **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidHeader, match=f"^{field}: not valid UTF-8"):
        compose(draft, now=1_800_000_000.0, max_size=10**6)
