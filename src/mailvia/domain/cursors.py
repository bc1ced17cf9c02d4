"""Cursors of the lists a caller pages through (messages, events, webhook attempts): sealed
positions, bound to their list and to whose list it is (an organization, a webhook).

A position is a global sequence number, which would show how much mail and how many events
every organization has; sealed, a cursor shows nothing, and one made up, or taken from
another organization or another list, does not open. The seal is a deterministic
authenticated encryption in the SIV way with HMAC-SHA256 (the standard library's): a 16-byte
tag over (list, scope, position), and the position's 8 bytes XOR a pad derived from the tag.
The same position in the same list gives the same cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from mailvia.domain.errors import InvalidCursor

_TAG = 16
_POSITION = 8


class CursorSeal:
    """`seal` a position of a list for a scope; `open` a cursor made so."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a cursor key needs at least 16 bytes")
        self._tag_key = hmac.new(key, b"mailvia cursor tag", hashlib.sha256).digest()
        self._pad_key = hmac.new(key, b"mailvia cursor pad", hashlib.sha256).digest()

    def seal(self, kind: str, scope: str, position: int) -> str:
        """An opaque cursor (URL-safe text) for `position` in `kind`'s list of `scope`."""
        plain = position.to_bytes(_POSITION, "big")
        tag = self._tag(kind, scope, plain)
        sealed = tag + bytes(a ^ b for a, b in zip(plain, self._pad(tag), strict=True))
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, kind: str, scope: str, cursor: str) -> int:
        """The position a cursor of `kind`'s list of `scope` names. Raises InvalidCursor for
        anything else (made up, damaged, another list's or another scope's)."""
        try:
            sealed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            sealed = b""
        if len(sealed) == _TAG + _POSITION:
            tag, hidden = sealed[:_TAG], sealed[_TAG:]
            plain = bytes(a ^ b for a, b in zip(hidden, self._pad(tag), strict=True))
            if hmac.compare_digest(tag, self._tag(kind, scope, plain)):
                return int.from_bytes(plain, "big")
        raise InvalidCursor("cursor: not a cursor this list handed out to you")

    def _tag(self, kind: str, scope: str, plain: bytes) -> bytes:
        message = b"\0".join((kind.encode(), scope.encode(), plain))
        return hmac.new(self._tag_key, message, hashlib.sha256).digest()[:_TAG]

    def _pad(self, tag: bytes) -> bytes:
        return hmac.new(self._pad_key, tag, hashlib.sha256).digest()[:_POSITION]
