"""encode_data: the DATA payload (CRLF line ends, dot-stuffing), its fast path for content
that needs no change, and its agreement with the plain definition on any input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailvia.transport.session import encode_data


def reference(content: bytes) -> bytes:
    """The definition, written the slow and obvious way (two regular expressions)."""
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", body)


@pytest.mark.parametrize(
    ("content", "payload"),
    [
        (b"", b"\r\n"),
        (b"a", b"a\r\n"),
        (b"a\r\n", b"a\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n"),
        (b".", b"..\r\n"),
        (b".start", b"..start\r\n"),
        (b"a\r\n.", b"a\r\n..\r\n"),
        (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n"),
        (b"a.b\r\n", b"a.b\r\n"),  # a dot inside a line is left alone
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n"),  # bare LF before a dot
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n"),  # bare CR before a dot
        (b"a\r", b"a\r\n"),  # a bare CR at the very end
        (b"a\n", b"a\r\n"),  # a bare LF at the very end
        (b"\r", b"\r\n"),
        (b"\n", b"\r\n"),
        (b"\r\r\n", b"\r\n\r\n"),  # a bare CR right before a pair
        (b"\r\n\n", b"\r\n\r\n"),  # a bare LF right after a pair
        (b"\n\r", b"\r\n\r\n"),  # LF then CR is two line ends, not a pair
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n..\r\n"),
    ],
)
def test_boundary_cases(content: bytes, payload: bytes) -> None:
    assert encode_data(content) == payload
    assert reference(content) == payload


def test_clean_content_comes_back_as_it_is() -> None:
    content = b"From: a@x.test\r\nSubject: hi\r\n\r\nbody. with dots.\r\n"
    assert encode_data(content) is content  # the fast path: no copy


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\n.", b" "])).map(b"".join))
def test_agrees_with_the_definition(content: bytes) -> None:
    assert encode_data(content) == reference(content)


@given(st.binary(max_size=200))
def test_agrees_with_the_definition_on_any_bytes(content: bytes) -> None:
    assert encode_data(content) == reference(content)
