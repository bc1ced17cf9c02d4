"""check_address's plain path (a dot-atom local part, the domain's verdict remembered) gives
email-validator's own answer for every address: the same normalised form, the same refusal
in the same words."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from mailvia.domain.errors import InvalidAddress
from mailvia.outbox import addresses
from mailvia.outbox.addresses import check_address

LOCALS = [
    "a",
    "Jane.Doe",
    "x+tag",
    "o'neil",
    "1rcpt",
    "a..b",
    ".a",
    "a.",
    "POSTMASTER",
    "Sales",
    "info",
    "abuse.team",
    "a!#$%&*+/=?^_`{|}~-",
    "é",
    "ü.x",
    "a b",
    "",
    "x" * 64,
    "x" * 65,
    "x" * 200,
]
DOMAINS = [
    "example.com",
    "Example.COM",
    "sub.example.co.uk",
    "bücher.de",
    "BÜCHER.de",
    "xn--bcher-kva.de",
    "xn--zz.com",
    "ab--cd.com",
    "-a.com",
    "a-.com",
    "a..com",
    "localhost",
    "mail.local",
    "x.invalid",
    "x.test",
    "x.onion",
    "com",
    "1.2.3.4",
    "[1.2.3.4]",
    "a.123",
    "",
    "exa mple.com",
    "e@x.com",
    "a_b.com",
    ("l" * 63 + ".") * 3 + "com",
    "l" * 64 + ".com",
    ("d" * 60 + ".") * 4 + "com",
    "\uff21.com",
    "a\u200b.com",
]


def _expected(address: str) -> str | tuple[str]:
    try:
        return str(
            validate_email(
                address, check_deliverability=False, allow_smtputf8=True, test_environment=True
            ).normalized
        )
    except EmailNotValidError as exc:
        return (f"recipient {address!r}: {exc}",)


def _got(address: str) -> str | tuple[str]:
    addresses._normalised.cache_clear()
    try:
        return check_address(address, "recipient")
    except InvalidAddress as exc:
        return (str(exc),)


def _all() -> list[str]:
    rng = random.Random(15)
    found = [f"{local}@{domain}" for local in LOCALS for domain in DOMAINS]
    found += [f"{rng.choice(LOCALS)}@{rng.choice(DOMAINS)}" for _ in range(300)]
    # within the limit as given, over it in IDNA ASCII (xn--bcher-kva)
    found += ["x" * 240 + "@bücher.de", "x" * 243 + "@bücher.de", "x" * 237 + "@bücher.de"]
    found += [f"{'x' * n}@{'bücher.' * 14}de" for n in (55, 56, 57)]
    found += [f"{'x' * n}@{'bücher.' * 16}example.de" for n in (19, 20, 21)]
    found += ["noat.example.com", "a@b@example.com", "@example.com", "a@"]
    return [a for a in found if not any(c in a for c in "<>,;\"' (")]


@pytest.mark.parametrize("address", _all())
def test_the_plain_path_answers_as_email_validator(address: str) -> None:
    assert _got(address) == _expected(address)


def test_a_new_recipient_at_a_known_domain_is_judged_by_the_remembered_domain() -> None:
    addresses._domain.cache_clear()
    check_address("first@remembered.example.com", "recipient")
    before = addresses._domain.cache_info()
    assert check_address("Second.One@Remembered.example.com", "recipient") == (
        "Second.One@remembered.example.com"
    )
    assert addresses._domain.cache_info().misses == before.misses + 1  # another spelling
    assert check_address("third@remembered.example.com", "recipient") == (
        "third@remembered.example.com"
    )
    assert addresses._domain.cache_info().hits == before.hits + 1
