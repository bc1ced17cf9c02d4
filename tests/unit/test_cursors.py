"""List cursors: sealed positions that open only for their list and scope, and show nothing
of the position (domain/cursors.py)."""

from __future__ import annotations

import base64

import pytest

from mailvia.domain.cursors import CursorSeal
from mailvia.domain.errors import InvalidCursor

SEAL = CursorSeal(b"k" * 32)


def raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


@pytest.mark.parametrize("position", [0, 1, 41, 2**31, 2**63 - 1])
def test_a_cursor_opens_to_its_position(position: int) -> None:
    cursor = SEAL.seal("msg", "org_1", position)
    assert SEAL.open("msg", "org_1", cursor) == position
    assert SEAL.seal("msg", "org_1", position) == cursor  # deterministic
    assert len(cursor) == 32 and "=" not in cursor


def test_a_cursor_shows_nothing_of_its_position() -> None:
    cursors = [raw(SEAL.seal("msg", "org_1", n)) for n in (1000, 1001)]
    for n, sealed in zip((1000, 1001), cursors, strict=True):
        assert n.to_bytes(8, "big") not in sealed and str(n).encode() not in sealed
    assert sum(a == b for a, b in zip(*cursors, strict=True)) < 6  # not a counter


@pytest.mark.parametrize(
    ("kind", "scope", "cursor"),
    [
        ("msg", "org_2", SEAL.seal("msg", "org_1", 7)),  # another organization's
        ("evt", "org_1", SEAL.seal("msg", "org_1", 7)),  # another list's
        ("msg", "org_1", CursorSeal(b"x" * 32).seal("msg", "org_1", 7)),  # another key's
        ("msg", "org_1", base64.urlsafe_b64encode(b"msg:7").decode()),  # the old kind
        ("msg", "org_1", SEAL.seal("msg", "org_1", 7)[:-2] + "AA"),  # damaged
        ("msg", "org_1", ""),
        ("msg", "org_1", "!!!"),
    ],
)
def test_any_other_cursor_is_refused(kind: str, scope: str, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        SEAL.open(kind, scope, cursor)
