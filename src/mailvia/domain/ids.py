"""Object identifiers: a prefix, the creation time and randomness (sortable by time)."""

from __future__ import annotations

from base64 import b32encode

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# RFC 4648's base32 alphabet to Crockford's: base64.b32encode (in C) does the bit work.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_MILLIS = (1 << 50) - 1


def _b32(value: int, length: int) -> str:
    """`value`'s lowest 5 * `length` bits, most significant first."""
    return "".join([_ALPHABET[(value >> shift) & 31] for shift in range(5 * length - 5, -1, -5)])


def make_id(prefix: str, now: float, entropy: bytes) -> str:
    """`prefix_` + 10 characters of milliseconds + 16 of randomness (needs 10 bytes).

    The same characters as `_b32(millis, 10) + _b32(entropy, 16)`: both 80-bit halves are
    base32-encoded at once, and the millisecond half's first 6 characters (30 zero bits) cut.
    """
    if len(entropy) < 10:
        raise ValueError("make_id needs 10 bytes of entropy")
    millis = int(now * 1000) & _MILLIS
    text = b32encode(millis.to_bytes(10, "big") + entropy[:10]).translate(_CROCKFORD)
    return f"{prefix}_{text[6:].decode()}"
