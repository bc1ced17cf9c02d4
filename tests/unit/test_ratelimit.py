"""Token buckets per key: parsing `COUNT/SECONDS`, the burst, the refill, the sweep; and the
API's wrapper shared by FastAPI's worker threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from mailvia.domain.errors import InvalidInput, RateLimited, RequestTooLarge
from mailvia.domain.ratelimit import RateLimiter, RequestCaps, RequestRate
from mailvia.ingress.api.ratelimit import TokenRateLimit

THREE_A_MINUTE = RequestRate(3, 60.0)  # one request back every 20 s


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("600/60", RequestRate(600, 60.0)),
        (" 3 / 0.5 ", RequestRate(3, 0.5)),
        ("1/86400", RequestRate(1, 86_400.0)),
    ],
)
def test_parse(text: str, rate: RequestRate) -> None:
    assert RequestRate.parse(text) == rate


@pytest.mark.parametrize(
    "text", ["", "600", "600/", "/60", "ten/60", "-1/60", "0/60", "1.5/60", "5/0", "5/-1", "5/inf"]
)
def test_parse_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidInput):
        RequestRate.parse(text)


def test_str_is_what_parse_reads() -> None:
    assert str(RequestRate(600, 60.0)) == "600/60"
    assert RequestRate.parse(str(RequestRate(3, 0.5))) == RequestRate(3, 0.5)


def test_a_burst_of_count_then_the_wait_for_one_request() -> None:
    limiter = RateLimiter(THREE_A_MINUTE)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(20.0)
    assert limiter.take("a", 5.0) == pytest.approx(15.0)  # a refused request takes nothing


@pytest.mark.parametrize(
    ("elapsed", "allowed"),
    [(19.9, 0), (20.0, 1), (39.9, 1), (40.0, 2), (60.0, 3), (3600.0, 3)],
)
def test_refill_up_to_the_burst(elapsed: float, allowed: int) -> None:
    limiter = RateLimiter(THREE_A_MINUTE)
    for _ in range(3):
        limiter.take("a", 0.0)
    results = [limiter.take("a", elapsed) for _ in range(4)]
    assert results[:allowed] == [0.0] * allowed
    assert all(wait > 0 for wait in results[allowed:])


def test_each_key_has_its_own_bucket() -> None:
    limiter = RateLimiter(RequestRate(1, 1.0))
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0


def test_a_steady_rate_is_served() -> None:
    limiter = RateLimiter(RequestRate(600, 60.0))
    waits = [limiter.take("a", i * 0.1) for i in range(6000)]  # ten a second for ten minutes
    assert waits == [0.0] * 6000


def test_full_buckets_are_swept_at_most_once_per_window() -> None:
    limiter = RateLimiter(THREE_A_MINUTE)
    for key in ("a", "b", "c"):
        limiter.take(key, 0.0)
    limiter.take("c", 50.0)  # c is busy
    assert len(limiter) == 3
    limiter.take("d", 59.0)  # a and b are full by 20 s, but the last sweep was at 0
    assert len(limiter) == 4
    limiter.take("d", 60.0)  # the sweep: a and b are full; c and d are not
    assert len(limiter) == 2
    limiter.take("a", 60.0)  # a swept bucket starts full again: nothing was lost
    assert [limiter.take("a", 60.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 20.0])


def test_memory_follows_the_keys_seen_lately() -> None:
    limiter = RateLimiter(RequestRate(10, 1.0))
    for second in range(1000):
        limiter.take(f"key{second}", float(second))
    assert len(limiter) <= 2


def test_the_api_wrapper_counts_exactly_across_threads() -> None:
    limit = TokenRateLimit(RequestRate(1000, 3600.0), clock=lambda: 0.0)

    def allowed(_: int) -> bool:
        try:
            limit.check("token")
        except RateLimited as exc:
            assert exc.retry_after == pytest.approx(3.6)
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(allowed, range(1600)))
    assert results.count(True) == 1000


def test_a_cost_takes_that_many_units_or_says_when_they_fit() -> None:
    limiter = RateLimiter(RequestRate(100, 60.0))  # 100 recipients, then 5 every 3 s
    assert limiter.take("k", 0.0, 70) == 0.0
    assert limiter.take("k", 0.0, 40) == pytest.approx(6.0)  # 10 short: 10 / (100 / 60)
    assert limiter.take("k", 0.0, 30) == 0.0  # the refusal took nothing
    assert limiter.take("k", 3.0, 5) == 0.0
    assert limiter.take("k", 3.0, 101) == float("inf")  # more than a bucket ever holds


def test_request_caps_count_messages_then_recipients() -> None:
    caps = RequestCaps(messages=3, recipients=10)
    caps.check(messages=3, recipients=10)
    with pytest.raises(RequestTooLarge, match="at most 3 messages"):
        caps.check(messages=4, recipients=1)
    with pytest.raises(RequestTooLarge, match="at most 10 recipients"):
        caps.check(messages=1, recipients=11)
    with pytest.raises(InvalidInput):
        RequestCaps(messages=0)


def test_the_token_wrapper_counts_recipients_apart_from_requests() -> None:
    now = [0.0]
    limit = TokenRateLimit(
        RequestRate(2, 60.0), recipients=RequestRate(10, 60.0), clock=lambda: now[0]
    )
    limit.take_recipients("token", 10)
    limit.check("token")  # requests have their own bucket
    with pytest.raises(RateLimited, match="too many recipients") as refused:
        limit.take_recipients("token", 1)
    assert refused.value.retry_after == pytest.approx(6.0)
    limit.take_recipients("other", 10)
    with pytest.raises(RequestTooLarge):
        limit.take_recipients("token", 11)
    now[0] += 6.0
    limit.take_recipients("token", 1)
    TokenRateLimit(None, recipients=None).take_recipients("token", 10**9)  # off
