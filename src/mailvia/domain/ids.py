"""Object identifiers: a prefix, the creation time and randomness (sortable by time)."""

from __future__ import annotations

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    """`value`'s lowest 5 * `length` bits, most significant first."""
    return "".join([_ALPHABET[(value >> shift) & 31] for shift in range(5 * length - 5, -1, -5)])


def make_id(prefix: str, now: float, entropy: bytes) -> str:
    """`prefix_` + 10 characters of milliseconds + 16 of randomness (needs 10 bytes)."""
    if len(entropy) < 10:
        raise ValueError("make_id needs 10 bytes of entropy")
    millis = int(now * 1000) & ((1 << 50) - 1)
    return f"{prefix}_{_b32(millis, 10)}{_b32(int.from_bytes(entropy[:10], 'big'), 16)}"
