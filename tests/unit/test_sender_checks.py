"""A request's sender checks (`Submitter.from_checks`, a `FromChecks`): each (user, address)
is judged once, so a batch of 1,000 messages with one envelope sender reads that sender's
rights once, and every message still gets the same answer (a refusal each time); each
user's rights are read once per domain and request (a message whose envelope sender and
From share a domain reads them once, not twice)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest

from mailvia.domain.errors import Forbidden
from mailvia.domain.tenancy import Organization, Role, User
from mailvia.outbox.senders import FromRead
from mailvia.outbox.submit import SubmitStore, Submitter

JANE = User("usr_jane", "org_1", "team_1", "jane@acme.test", Role.MEMBER)
JOE = User("usr_joe", "org_1", "team_1", "joe@acme.test", Role.MEMBER)


class Rights:
    """Only what the checks read (`user_from`), counting the reads."""

    def __init__(self, jane: tuple[str, ...] = ("jane@acme.test",)) -> None:
        self.reads: Counter[str] = Counter()
        self.jane = jane

    def user_from(self, org_id: str, user_id: str, address: str) -> FromRead:
        self.reads[user_id, address.rpartition("@")[2]] += 1
        owner = "org_1" if address.lower().endswith("@acme.test") else None
        held = self.jane if user_id == JANE.id else ("joe@acme.test",)
        return FromRead(address.lower(), owner, Organization(org_id, "acme"), (), identities=held)


def checks(rights: Rights | None = None) -> tuple[Any, Rights]:
    rights = rights or Rights()
    submitter = Submitter(cast(SubmitStore, rights), pool=lambda: None)
    return submitter.from_checks().check, rights


def test_each_sender_and_address_is_read_once() -> None:
    check, rights = checks()
    for _ in range(1000):
        check(JANE, "jane@acme.test")
    check(JANE, "Jane@ACME.test")  # addresses compare without case
    assert rights.reads == Counter({(JANE.id, "acme.test"): 1})
    check(JOE, "joe@acme.test")  # another user: his own read
    assert rights.reads == Counter({(JANE.id, "acme.test"): 1, (JOE.id, "acme.test"): 1})


def test_an_envelope_sender_and_a_from_of_one_domain_read_the_rights_once() -> None:
    check, rights = checks(Rights(jane=("@acme.test",)))
    check(JANE, "bounces@acme.test")  # the envelope sender
    check(JANE, "jane@acme.test")  # the From
    assert sum(rights.reads.values()) == 1


def test_a_refusal_is_remembered_and_raised_every_time() -> None:
    check, rights = checks()
    for _ in range(3):
        with pytest.raises(Forbidden, match="not one of your sender identities"):
            check(JANE, "joe@acme.test")
        with pytest.raises(Forbidden, match="not assigned to your organization"):
            check(JANE, "jane@other.test")
    assert sum(rights.reads.values()) == 2
