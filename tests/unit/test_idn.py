"""Addresses' domains between Unicode and IDNA A-labels (domain/idn.py)."""

from __future__ import annotations

import pytest

from mailvia.domain.idn import ascii_address, command_address, unicode_address


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("bob@xn--bcher-kva.example", "bob@bücher.example"),
        ("bob@XN--BCHER-KVA.example", "bob@bücher.example"),  # domains are caseless
        ("bob@xn--wgv71a.jp", "bob@日本.jp"),
        ("bob@plain.example", "bob@plain.example"),
        # Not a canonical A-label of a name that is not ASCII: kept as written, so it
        # cannot pass for another name in a comparison (`xn--example-` decodes to `example`).
        ("bob@xn--example-.com", "bob@xn--example-.com"),
        ("bob@xn---u8xia8m.example", "bob@xn---u8xia8m.example"),
        ("bob@xn--.example", "bob@xn--.example"),
        ("bob@xn--zz!.example", "bob@xn--zz!.example"),
    ],
)
def test_a_labels_are_read_back_only_when_canonical(written: str, read: str) -> None:
    assert unicode_address(written) == read


def test_a_unicode_domain_round_trips() -> None:
    for address in ("a@bücher.example", "a@日本.jp", "a@straße.de"):
        assert unicode_address(ascii_address(address)) == address
    assert ascii_address("jörg@bücher.example") == "jörg@bücher.example"  # SMTPUTF8: as is


def test_a_command_writes_a_labels_unless_in_utf8() -> None:
    """MAIL and RCPT, sequential or pipelined, write an address by this one rule."""
    assert command_address("jane@straße.test", "ascii") == "jane@xn--strae-oqa.test"
    assert command_address("jane@straße.test", "utf-8") == "jane@straße.test"
    assert command_address("jane@plain.test", "ascii") == "jane@plain.test"
