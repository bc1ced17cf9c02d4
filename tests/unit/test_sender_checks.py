"""A request's sender checks (`Submitter.sender_checks`): each (user, address) is worked out
once, so a batch of 1,000 messages with one envelope sender reads that sender's rights once,
and every message still gets the same answer (a refusal each time)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest

from mailvia.domain.errors import Forbidden
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.submit import SubmitStore, Submitter

JANE = User("usr_jane", "org_1", "team_1", "jane@acme.test", Role.MEMBER)
JOE = User("usr_joe", "org_1", "team_1", "joe@acme.test", Role.MEMBER)


class Rights:
    """Only what check_sender reads: domains and identities, counting the reads."""

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()

    def domain_organization(self, domain: str) -> str | None:
        self.reads["domain"] += 1
        return "org_1" if domain == "acme.test" else None

    def identities(self, user_id: str) -> list[str]:
        self.reads["identities"] += 1
        return ["jane@acme.test"] if user_id == JANE.id else ["joe@acme.test"]


def checks() -> tuple[Any, Rights]:
    rights = Rights()
    submitter = Submitter(cast(SubmitStore, rights), pool=lambda: None)
    return submitter.sender_checks(), rights


def test_each_sender_and_address_is_read_once() -> None:
    check, rights = checks()
    for _ in range(1000):
        check(JANE, "jane@acme.test")
    check(JANE, "Jane@ACME.test")  # addresses compare without case
    assert rights.reads == Counter(domain=1, identities=1)
    check(JOE, "joe@acme.test")  # another user: his own rights
    assert rights.reads == Counter(domain=2, identities=2)


def test_a_refusal_is_remembered_and_raised_every_time() -> None:
    check, rights = checks()
    for _ in range(3):
        with pytest.raises(Forbidden, match="not one of your sender identities"):
            check(JANE, "joe@acme.test")
        with pytest.raises(Forbidden, match="not assigned to your organization"):
            check(JANE, "jane@other.test")
    assert rights.reads == Counter(domain=2, identities=1)
