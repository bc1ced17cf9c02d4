"""RS256 signing for the fake providers: a key made at start, its JWKS entry, compact JWTs.

Uses `cryptography` only (RFC 7515 compact serialization, RFC 7517 JWK). No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class SigningKey:
    """A fresh 2048-bit RSA key with a `kid` derived from its public part (RFC 7638 thumbprint)."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self._n, self._e = _int_b64url(numbers.n), _int_b64url(numbers.e)
        canonical = json.dumps({"e": self._e, "kty": "RSA", "n": self._n}, separators=(",", ":"))
        self.kid = b64url(hashlib.sha256(canonical.encode()).digest())[:27]

    def jwk(self, **extra: str) -> dict[str, str]:
        """The public key as a JWK, with `extra` members (e.g. `issuer` for Microsoft)."""
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self._n,
            "e": self._e,
            **extra,
        }

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT") -> str:
        """A compact JWS of `claims` signed RS256 with this key's `kid` in the header."""
        header = {"alg": "RS256", "kid": self.kid, "typ": typ}
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
