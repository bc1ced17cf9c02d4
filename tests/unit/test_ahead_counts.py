"""The forecast's backlog per channel: counted at most once a `fresh_for` on the class's own
monotonic clock, by one thread at a time, plus this process's own additions
(outbox/ahead.py)."""

from __future__ import annotations

import threading

from mailvia.domain.clock import SteppingClock
from mailvia.domain.message import Envelope, State
from mailvia.outbox.ahead import QueuedAhead
from mailvia.outbox.forecasts import Forecasts
from mailvia.outbox.ports import NewMessage
from support.rows import channel

T0 = 1_700_000_000.0


class Counter:
    def __init__(self, waiting: dict[str, int]) -> None:
        self.waiting = waiting
        self.calls: list[str] = []

    def __call__(self, channel_id: str) -> int:
        self.calls.append(channel_id)
        return self.waiting[channel_id]


def test_a_count_is_kept_for_fresh_for_and_grows_with_what_was_added() -> None:
    store, clock = Counter({"ch_a": 10, "ch_b": 3}), SteppingClock(100.0)
    ahead = QueuedAhead(store, fresh_for=1.0, clock=clock)
    assert ahead.waiting("ch_a") == 10
    ahead.added("ch_a")
    ahead.added("ch_a", 2)
    store.waiting["ch_a"] = 50  # others' work: not seen until the count is stale
    clock.at(100.9)
    assert ahead.waiting("ch_a") == 13
    assert ahead.waiting("ch_b") == 3  # each channel has its own count
    assert store.calls == ["ch_a", "ch_b"]
    clock.at(101.0)
    assert ahead.waiting("ch_a") == 50  # a second later: counted again
    assert store.calls == ["ch_a", "ch_b", "ch_a"]


def test_additions_to_a_channel_never_counted_are_not_kept() -> None:
    """Its first count will see them: nothing to add them to."""
    store = Counter({"ch_a": 7})
    ahead = QueuedAhead(store, clock=SteppingClock(100.0))
    ahead.added("ch_a", 5)
    assert ahead.waiting("ch_a") == 7


def message(msg_id: str, now: float) -> NewMessage:
    return NewMessage(
        id=msg_id,
        organization_id="org_1",
        user_id="usr_1",
        channel_id="ch_a",
        envelope=Envelope("jane@acme.test", ("bob@example.test",)),
        content=b"Subject: hi\r\n\r\nhello\r\n",
        state=State.QUEUED,
        created_at=now,
        expires_at=now + 86_400,
    )


def test_requests_reaching_the_count_out_of_their_now_order_do_not_count_again() -> None:
    """A request's `now` is when it started: a later one may reach the count first. The
    count's freshness is the monotonic clock's, not theirs."""
    store, clock = Counter({"ch_a": 4}), SteppingClock(50.0)
    ahead = QueuedAhead(store, fresh_for=1.0, clock=clock)
    later, earlier = T0 + 0.9, T0 + 0.2
    for now in (later, earlier, later, earlier):
        forecasts = Forecasts(None, now=now, queued=ahead)  # type: ignore[arg-type]
        forecasts.plan(
            channel("ch_a", "relay"), message(f"msg_{now}", now)
        )  # no budgets: no ledger read
        clock.advance(0.1)
    assert store.calls == ["ch_a"]


def test_one_of_several_callers_counts_a_stale_channel_the_others_use_the_last_count() -> None:
    clock = SteppingClock(100.0)
    counting, release = threading.Event(), threading.Event()
    calls: list[str] = []
    lock = threading.Lock()

    def slow_count(channel_id: str) -> int:
        with lock:
            calls.append(channel_id)
            first = len(calls) == 1
        if first:
            return 10
        counting.set()
        assert release.wait(10)
        return 20

    ahead = QueuedAhead(slow_count, fresh_for=1.0, clock=clock)
    assert ahead.waiting("ch_a") == 10
    clock.advance(2.0)  # stale
    answers: list[int] = []

    def ask() -> None:
        answer = ahead.waiting("ch_a")
        with lock:
            answers.append(answer)

    counter = threading.Thread(target=ask)
    counter.start()
    assert counting.wait(10)  # one thread counts, and blocks in the store
    others = [threading.Thread(target=ask) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(10)
    assert sorted(answers) == [10] * 5  # the others did not wait: the last count
    release.set()
    counter.join(10)
    assert sorted(answers) == [10] * 5 + [20] and calls == ["ch_a", "ch_a"]
    assert ahead.waiting("ch_a") == 20  # fresh now


def test_callers_of_a_channel_never_counted_wait_for_the_one_count() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_count(channel_id: str) -> int:
        calls.append(channel_id)
        started.set()
        assert release.wait(10)
        return 7

    ahead = QueuedAhead(slow_count, clock=SteppingClock(100.0))
    answers: list[int] = []
    first = threading.Thread(target=lambda: answers.append(ahead.waiting("ch_a")))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: answers.append(ahead.waiting("ch_a"))) for _ in "ab"]
    for thread in others:
        thread.start()
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert answers == [7, 7, 7] and calls == ["ch_a"]


def test_a_channel_not_asked_for_long_is_forgotten() -> None:
    store, clock = Counter({"ch_a": 1, "ch_b": 2}), SteppingClock(100.0)
    ahead = QueuedAhead(store, fresh_for=1.0, forget_after=60.0, clock=clock)
    ahead.waiting("ch_a")
    clock.advance(30)
    ahead.waiting("ch_b")
    clock.advance(40)  # ch_a last asked 70 s ago, ch_b 40 s ago
    store.waiting["ch_b"] = 3
    assert ahead.waiting("ch_b") == 3  # its count: ch_a is dropped
    assert list(ahead._counts) == ["ch_b"]


def test_a_count_that_failed_is_made_again_by_the_next_caller() -> None:
    calls: list[str] = []

    def failing_once(channel_id: str) -> int:
        calls.append(channel_id)
        if len(calls) == 1:
            raise ConnectionError("store away")
        return 5

    ahead = QueuedAhead(failing_once, clock=SteppingClock(100.0))
    try:
        ahead.waiting("ch_a")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the count's error reaches the thread that counted")
    assert ahead.waiting("ch_a") == 5 and calls == ["ch_a", "ch_a"]
