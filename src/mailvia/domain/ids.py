"""Object identifiers: a prefix, the creation time and randomness (sortable by time)."""

from __future__ import annotations

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# Two characters (10 bits) at a time: half the steps of one character at a time.
_PAIRS = tuple(first + second for first in _ALPHABET for second in _ALPHABET)
_MILLIS_SHIFTS = tuple(range(40, -1, -10))  # 50 bits: 10 characters
_ENTROPY_SHIFTS = tuple(range(70, -1, -10))  # 80 bits: 16 characters
_MILLIS = (1 << 50) - 1


def _b32(value: int, length: int) -> str:
    """`value`'s lowest 5 * `length` bits, most significant first."""
    return "".join([_ALPHABET[(value >> shift) & 31] for shift in range(5 * length - 5, -1, -5)])


def make_id(prefix: str, now: float, entropy: bytes) -> str:
    """`prefix_` + 10 characters of milliseconds + 16 of randomness (needs 10 bytes): the
    same characters as `_b32(millis, 10) + _b32(entropy, 16)`, made two at a time."""
    if len(entropy) < 10:
        raise ValueError("make_id needs 10 bytes of entropy")
    millis = int(now * 1000) & _MILLIS
    random = int.from_bytes(entropy[:10], "big")
    pairs = [_PAIRS[(millis >> shift) & 1023] for shift in _MILLIS_SHIFTS]
    pairs += [_PAIRS[(random >> shift) & 1023] for shift in _ENTROPY_SHIFTS]
    return f"{prefix}_{''.join(pairs)}"
