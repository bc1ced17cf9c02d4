"""The DATA payload of a message: every line ending CRLF, lines dot-stuffed (RFC 5321
§4.5.2), without the final dot, which the session writes.

Pure: no I/O.
"""

from __future__ import annotations


def encode_data(content: bytes) -> bytes:
    """The DATA payload without the final dot: every line ending CRLF (bare CR and LF
    included, so `\\n.\\n` or `\\r.\\r` can never end DATA early), lines dot-stuffed."""
    if _clean(content):  # the usual case: already CRLF throughout, no line starts with a dot
        return content if content.endswith(b"\r\n") else content + b"\r\n"
    # bytes.replace rather than regular expressions: the same output, ~4x faster (it is on
    # the hot path of every message; bench/deliver.py --experiment fastencode).
    body = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    return b"." + body if body.startswith(b".") else body


def _clean(content: bytes) -> bool:
    """Whether encode_data would change nothing but a missing final CRLF: no line starts with
    a dot and every CR and LF is part of a CRLF pair (none is left once the pairs are taken
    out). About 12 us for 6 KB, against 18 us for the replacements, which copy thrice."""
    if content.startswith(b".") or b"\r\n." in content:
        return False
    rest = b"".join(content.split(b"\r\n"))
    return b"\r" not in rest and b"\n" not in rest
