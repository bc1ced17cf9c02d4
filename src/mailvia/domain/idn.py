"""Internationalised domain names in addresses (RFC 5890, RFC 6531).

Addresses are stored and compared with their domain in Unicode (email-validator's normal
form, outbox/addresses.py); a message that is not SMTPUTF8 must write them in ASCII, the
domain as IDNA A-labels (`user@xn--bcher-kva.example`), since an encoded word is not allowed
inside an address (RFC 2047 §5). Only an address whose local part is not ASCII needs SMTPUTF8
(and then every address in the message is written in UTF-8, RFC 6532). The domain is already
mapped and normalised by email-validator (UTS 46), so a label converts with Punycode
(RFC 3492) alone, both ways. Pure.
"""

from __future__ import annotations

_ACE = "xn--"


def needs_smtputf8(address: str) -> bool:
    """Whether the address can only be written in UTF-8 (its local part is not ASCII)."""
    return not address.rpartition("@")[0].isascii()


def ascii_address(address: str) -> str:
    """The address with its domain as A-labels; as given when the domain is ASCII already,
    or when the local part is not ASCII (SMTPUTF8: the whole address stays in UTF-8)."""
    local, at, domain = address.rpartition("@")
    if domain.isascii() or not local.isascii():
        return address
    labels = (
        label if label.isascii() else _ACE + label.encode("punycode").decode("ascii")
        for label in domain.split(".")
    )
    return local + at + ".".join(labels)


def command_address(address: str, encoding: str) -> str:
    """The address as a MAIL or RCPT command writes it in `encoding`: as given in UTF-8
    (SMTPUTF8), else its domain as A-labels (`ascii_address`). The one rule for both
    commands, sequential or pipelined (transport/session.py, transport/pipelining.py)."""
    return address if encoding != "ascii" else ascii_address(address)


def unicode_address(address: str) -> str:
    """The address with its A-labels decoded (the form addresses are compared in); a label
    that is not valid Punycode is kept as written."""
    local, at, domain = address.rpartition("@")
    if _ACE not in domain.lower():
        return address
    return local + at + ".".join(_decoded(label) for label in domain.split("."))


def _decoded(label: str) -> str:
    """An A-label's U-label; the label as written unless it is the canonical encoding of a
    name that is not ASCII (`xn--example-` decodes to `example`, and would otherwise pass
    for another name). Domains are caseless: the label is read in lower case."""
    code = label.lower().removeprefix(_ACE)
    if code == label.lower():
        return label
    try:
        decoded = code.encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return label
    if decoded.isascii() or decoded.encode("punycode").decode("ascii") != code:
        return label
    return decoded
