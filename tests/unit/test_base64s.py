"""The API's base64 decoding (ingress/api/base64s.py, pybase64) gives what the standard
library's `b64decode(validate=True)` gives, bytes or error, on every string here."""

from __future__ import annotations

import base64
import binascii
import random

from mailvia.ingress.api import base64s

EDGES = [
    "",
    "=",
    "==",
    "===",
    "QQ",
    "QQ=",
    "QQ==",
    "QQ===",
    "Q===",
    "QUJD",
    "QUJD=",
    "QUJD==",
    "=QUJD",
    "QUJ=D",
    "QQ==QQ==",
    " QUJD",
    "QUJD ",
    "QU\nJD",
    "QU\r\nJD",
    "QUJD\n",
    "QU-_",
    "QU+/",
    "QUJ\u00e9",
    "QUJ\x00",
    "\ud800QUJD",
    "QUJDRA",
    "QUJDRA=",
    "QUJDRA==",
    "QUJDR",
    "QUJDR===",
    "Zm9vYg==",
    "Zm9vYg=",
    "Zm9vYmE=",
    "Zm9vYmE",
    "Zm9v\tYmE=",
]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n-_.\r\t\u00e9"


def verdict(decode, text: str) -> object:  # type: ignore[no-untyped-def]
    try:
        return decode(text)
    except (binascii.Error, ValueError) as exc:
        return type(exc).__name__


def stdlib(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_the_same_verdict_as_the_standard_library() -> None:
    rng = random.Random(15)
    texts = list(EDGES)
    for _ in range(3000):
        texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))))
        good = base64.b64encode(rng.randbytes(rng.randint(0, 40))).decode()
        cut = rng.randint(0, len(good))
        texts += [good, good[:cut] + rng.choice(ALPHABET) + good[cut:], good[:cut]]
    for text in texts:
        assert verdict(base64s.decode, text) == verdict(stdlib, text), repr(text)
