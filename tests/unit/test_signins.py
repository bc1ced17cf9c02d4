"""Failed sign-ins (domain/signins.py) on a driven clock: per client and per login at a
client, never a lockout of a login alone; for the pages, a login guessed from many clients
slows only the clients that failed for it."""

from __future__ import annotations

import pytest

from mailvia.domain.signins import (
    PAGES,
    SUBMISSION,
    FailedSignIns,
    Limit,
    SignInPolicy,
    client_key,
)

VICTIM = "victim@acme.test"
T0 = 1_000.0


def fail(signins: FailedSignIns, login: str, client: str, now: float, times: int = 1) -> bool:
    locked = False
    for _ in range(times):
        locked = signins.failed(signins.begin(login, client, now), now)
    return locked


def succeed(signins: FailedSignIns, login: str, client: str, now: float) -> None:
    signins.forget(signins.begin(login, client, now), succeeded=True)


@pytest.mark.parametrize("policy", [SUBMISSION, PAGES], ids=["submission", "pages"])
def test_failures_from_many_clients_never_hold_up_a_fresh_client(policy: SignInPolicy) -> None:
    signins = FailedSignIns(policy)
    for n in range(1_000):
        assert not signins.verdict(VICTIM, f"10.0.{n // 250}.{n % 250}", T0).locked
        fail(signins, VICTIM, f"10.0.{n // 250}.{n % 250}", T0)
    verdict = signins.verdict(VICTIM.upper(), "192.0.2.1", T0)
    assert (verdict.locked, verdict.wait) == (False, 0.0)


def test_one_client_waits_from_its_fourth_try_and_is_locked_out_at_ten() -> None:
    signins = FailedSignIns(SUBMISSION)
    now, waits, locked = T0, [], False
    for _ in range(10):
        verdict = signins.verdict(VICTIM, "192.0.2.1", now)
        assert not verdict.locked
        waits.append(verdict.wait)
        now += verdict.wait  # the submission port waits that long, then checks
        locked = fail(signins, VICTIM, "192.0.2.1", now)
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8, 8, 8] and locked
    assert signins.verdict("someone@acme.test", "192.0.2.1", now).locked  # the client, any login
    assert signins.verdict(VICTIM, "192.0.2.2", now) == signins.verdict(VICTIM, "192.0.2.2", T0)
    assert not signins.verdict(VICTIM, "192.0.2.2", now).locked
    now += 15 * 60 + 1
    after = signins.verdict(VICTIM, "192.0.2.1", now)
    assert (after.locked, after.wait) == (False, 0.0)


def test_a_client_trying_many_logins_is_locked_out() -> None:
    signins = FailedSignIns(SUBMISSION)
    locks = [fail(signins, f"u{i}@acme.test", "192.0.2.1", T0) for i in range(10)]
    assert locks == [False] * 9 + [True]
    assert signins.verdict(VICTIM, "192.0.2.1", T0).locked
    assert not signins.verdict(VICTIM, "192.0.2.9", T0).locked


def test_the_wait_counts_from_the_last_failure() -> None:
    signins = FailedSignIns(SUBMISSION)
    fail(signins, VICTIM, "192.0.2.1", T0, times=4)
    assert signins.verdict(VICTIM, "192.0.2.1", T0).wait == 2.0
    assert signins.verdict(VICTIM, "192.0.2.1", T0 + 1.5).wait == 0.5
    assert signins.verdict(VICTIM, "192.0.2.1", T0 + 2).wait == 0.0


def test_failures_age_out_of_the_window() -> None:
    signins = FailedSignIns(SignInPolicy(client=Limit(3), pair=Limit(3), window=60.0))
    fail(signins, VICTIM, "192.0.2.1", T0, times=5)
    assert signins.verdict(VICTIM, "192.0.2.1", T0).wait == 4.0
    assert signins.verdict(VICTIM, "192.0.2.1", T0 + 61).wait == 0.0


def test_tries_being_checked_count_so_parallel_guesses_cannot_overshoot() -> None:
    signins = FailedSignIns(SUBMISSION)
    for _ in range(10):
        signins.begin(VICTIM, "192.0.2.1", T0)  # all in flight, none settled
    assert signins.verdict("other@acme.test", "192.0.2.1", T0).locked
    assert not signins.verdict(VICTIM, "192.0.2.9", T0).locked


def test_many_good_logins_at_once_from_one_client_are_never_held_up() -> None:
    signins = FailedSignIns(SUBMISSION)
    for _ in range(20):
        assert signins.verdict(VICTIM, "192.0.2.1", T0) == signins.verdict(VICTIM, "x", T0)
        succeed(signins, VICTIM, "192.0.2.1", T0)
    verdict = signins.verdict(VICTIM, "192.0.2.1", T0)
    assert (verdict.locked, verdict.wait) == (False, 0.0)


def test_a_success_clears_the_login_at_that_client_but_not_the_client() -> None:
    signins = FailedSignIns(SignInPolicy(client=Limit(6), pair=Limit(3)))
    fail(signins, VICTIM, "192.0.2.1", T0, times=5)
    assert signins.verdict(VICTIM, "192.0.2.1", T0).wait == 4.0
    succeed(signins, VICTIM, "192.0.2.1", T0)
    assert signins.verdict(VICTIM, "192.0.2.1", T0).wait == 0.0
    fail(signins, "other@acme.test", "192.0.2.1", T0, times=2)  # the client's 6th and 7th
    assert signins.verdict(VICTIM, "192.0.2.1", T0).wait == 2.0


def test_pages_slow_a_login_guessed_everywhere_only_for_clients_that_failed_for_it() -> None:
    signins = FailedSignIns(PAGES)
    clients = [f"198.51.100.{n}" for n in range(1, 9)]
    for client in clients:
        assert signins.verdict(VICTIM, client, T0).wait == 0.0
        fail(signins, VICTIM, client, T0)
    # eight failures for the login: 2 ** (8 - 5) seconds for those eight clients
    assert [signins.verdict(VICTIM, c, T0).wait for c in clients] == [8.0] * 8
    assert signins.verdict(VICTIM, "203.0.113.7", T0).wait == 0.0  # never failed: no wait
    assert signins.verdict("other@acme.test", clients[0], T0).wait == 0.0
    assert signins.verdict(VICTIM, clients[0], T0 + 8).wait == 0.0


def test_pages_slow_one_client_after_five_failures_for_one_account() -> None:
    signins = FailedSignIns(PAGES)
    fail(signins, VICTIM, "198.51.100.1", T0, times=5)
    assert signins.verdict(VICTIM, "198.51.100.1", T0).wait == 1.0
    fail(signins, VICTIM, "198.51.100.1", T0 + 1)
    assert signins.verdict(VICTIM, "198.51.100.1", T0 + 1).wait == 2.0
    assert not signins.verdict(VICTIM, "198.51.100.1", T0 + 1).locked  # pages never lock
    assert signins.verdict(VICTIM, "198.51.100.2", T0 + 1).wait == 0.0


def test_pages_cap_the_wait_at_fifteen_minutes() -> None:
    signins = FailedSignIns(PAGES)
    fail(signins, VICTIM, "198.51.100.1", T0, times=19)
    assert signins.verdict(VICTIM, "198.51.100.1", T0).wait == 15 * 60.0


def test_memory_stays_bounded_under_a_flood_of_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    import mailvia.domain.signins as module

    monkeypatch.setattr(module, "_MAX_KEYS", 100)
    signins = FailedSignIns(SUBMISSION)
    for n in range(1_000):
        fail(signins, VICTIM, f"10.0.{n // 250}.{n % 250}", T0 + n)
    assert len(signins._records) <= 100


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(host: str, key: str) -> None:
    assert client_key(host) == key
