"""Address and header-value checks shared by every intake and use case: no line breaks or NUL,
lengths, and syntactically valid addresses (email-validator, international addresses allowed,
no DNS look-up)."""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

from mailvia.domain.errors import InvalidAddress, InvalidHeader

# CR, LF and NUL, and what Python's email package also treats as a line break.
_FORBIDDEN = re.compile("[\r\n\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
MAX_HEADER_VALUE = 998  # RFC 5322 §2.1.1's line limit, for one field's value
_NOT_UTF8 = re.compile("[\ud800-\udfff\ufffd]")  # undecodable bytes, as read
_LOGIN = re.compile(r"^[^@\s<>,;\"'()\x00-\x1f]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$", re.I)


def check_clean(value: str, what: str) -> str:
    """Refuse line breaks and NUL, which would let a value start a new header or command,
    and values longer than a header line may be."""
    if _FORBIDDEN.search(value):
        raise InvalidHeader(f"{what}: line breaks and NUL characters are not allowed")
    if len(value) > MAX_HEADER_VALUE:
        raise InvalidHeader(f"{what}: at most {MAX_HEADER_VALUE} characters")
    return value


def check_address(address: str, what: str = "address") -> str:
    """A syntactically valid address (no DNS look-up), normalised; raises InvalidAddress."""
    check_clean(address, what)
    if _NOT_UTF8.search(address):
        raise InvalidAddress(f"{what}: not valid UTF-8")
    if any(c in address for c in "<>,;\"' ") or "(" in address:
        raise InvalidAddress(f"{what} {address!r}: give a bare address like name@example.com")
    normalised = _normalised(address)
    if isinstance(normalised, EmailNotValidError):
        raise InvalidAddress(f"{what} {address!r}: {normalised}") from normalised
    return normalised


@functools.lru_cache(maxsize=8192)
def _normalised(address: str) -> str | EmailNotValidError:
    """email-validator's verdict, remembered: an address is checked at MAIL or RCPT and again
    with the message, and the same senders come back all day."""
    try:
        # test_environment: `.test` domains are allowed (RFC 6761), for demos and tests.
        result = validate_email(
            address, check_deliverability=False, allow_smtputf8=True, test_environment=True
        )
    except EmailNotValidError as exc:
        return exc
    return str(result.normalized)


def check_login(email: str) -> str:
    """A user's sign-in email: an address, or `name@localhost`-style for local accounts."""
    email = email.strip().lower()
    if _LOGIN.match(email) and email.endswith("@localhost"):
        return email
    return check_address(email, "email").lower()
