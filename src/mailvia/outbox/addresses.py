"""Address and header-value checks shared by every intake and use case: no line breaks or NUL,
lengths, and syntactically valid addresses (email-validator, international addresses allowed,
no DNS look-up)."""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)

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


def check_domain(domain: str, what: str = "domain") -> str:
    """A domain in the form addresses hold it, the one it is stored and compared in: lower
    case, without its one leading `@`, its A-labels decoded (`xn--strae-oqa.test` is
    `straße.test`, as email-validator's normal form writes an address's domain). Raises
    InvalidAddress, or InvalidHeader for a line break, NUL or a value longer than a line."""
    check_clean(domain, what)
    domain = domain.strip().lower().removeprefix("@")
    known = _domain(domain) if not _NOT_UTF8.search(domain) else None
    if known is None:
        raise InvalidAddress(f"{what} {domain!r}: {_refusal(domain)}")
    return known[0].lower()


def _refusal(domain: str) -> str:
    """email-validator's reason for refusing `domain`, said of a domain: it speaks of an
    address and its @-sign (`An email address cannot have two periods in a row.`)."""
    try:
        _validated(f"a@{domain}")
    except EmailNotValidError as exc:
        said = str(exc)
    else:  # pragma: no cover - _domain refused it
        said = ""
    for theirs, ours in _DOMAIN_WORDS:
        said = said.replace(theirs, ours)
    if not said or "@" in said or "email address" in said:
        return "not a valid domain name."
    return said


_DOMAIN_WORDS = (
    ("An email address cannot", "A domain cannot"),
    ("immediately after the @-sign or after a period", "at the start of a label"),
    ("immediately after the @-sign", "at its start"),
    ("The email address is too long after the @-sign", "The domain is too long"),
    ("After the @-sign, periods cannot be separated by", "A label cannot have"),
    ("The part after the @-sign", "The domain"),
)


def check_identity(identity: str) -> str:
    """A sender identity (`jane@acme.test`, or `@acme.test` for a whole domain) in the form it
    is stored and compared in: an address normalised and in lower case, a domain as
    `check_domain` holds it. Raises InvalidAddress."""
    identity = identity.strip().lower()
    if identity.startswith("@"):
        return "@" + check_domain(identity)
    return check_address(identity).lower()


@functools.lru_cache(maxsize=8192)
def _normalised(address: str) -> str | EmailNotValidError:
    """email-validator's verdict, remembered: an address is checked at MAIL or RCPT and again
    with the message, and the same senders come back all day. A plain ASCII local part
    (`_plain_normalised`) takes its domain's verdict, remembered too: a new recipient at a
    known domain costs a regular expression, not email-validator's whole parse."""
    plain = _plain_normalised(address)
    if plain is not None:
        return plain
    try:
        return str(_validated(address).normalized)
    except EmailNotValidError as exc:
        return exc


def _validated(address: str) -> ValidatedEmail:
    # test_environment: `.test` domains are allowed (RFC 6761), for demos and tests.
    return validate_email(
        address, check_deliverability=False, allow_smtputf8=True, test_environment=True
    )


def _plain_normalised(address: str) -> str | None:
    """email-validator's normalised address when the local part is a plain ASCII dot-atom
    (kept as given, as email-validator keeps it) and its domain is valid, from the domain's
    remembered verdict; None when the full check must decide (another local part, a refused
    domain, an address over the length limit), so refusals keep email-validator's words.
    email-validator splits at the first @ when the local part is a dot-atom, judges the
    domain on its own, then the whole length as given, normalised and in IDNA ASCII."""
    local, at, domain = address.partition("@")
    if not at or len(local) > _LOCAL_MOST or not DOT_ATOM_TEXT.match(local):
        return None
    if local.lower() in _MAILBOX_NAMES:
        return None
    known = _domain(domain)
    if known is None:
        return None
    shown, ascii_domain = known
    longest = max(len(domain.encode()), len(shown.encode()), len(ascii_domain))
    if len(local) + 1 + longest > EMAIL_MAX_LENGTH:
        return None
    return f"{local}@{shown}"


_MAILBOX_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # email-validator lowercases them
# A longer local part is judged whole: email-validator before 2.3 refuses it, 2.3 on do not.
_LOCAL_MOST = 64


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> tuple[str, str] | None:
    """A domain's normalised and IDNA ASCII forms, judged as email-validator judges the part
    after the @ (with a one-letter local part before it); None if it refuses it."""
    try:
        checked = _validated(f"a@{domain}")
    except EmailNotValidError:
        return None
    return str(checked.domain), str(checked.ascii_domain)


def check_login(email: str) -> str:
    """A user's sign-in email: an address, or `name@localhost`-style for local accounts."""
    email = email.strip().lower()
    if _LOGIN.match(email) and email.endswith("@localhost"):
        return email
    return check_address(email, "email").lower()


def login_key(email: str) -> str:
    """A sign-in email as typed, in the form users are stored in (`check_login`'s: a domain's
    A-labels are its U-labels, `ada@xn--bcher-kva.test` is `ada@bücher.test`), to look a
    user up by; what is not an address is only lower-cased (it matches no one)."""
    try:
        return check_login(email)
    except (InvalidAddress, InvalidHeader):
        return email.strip().lower()
