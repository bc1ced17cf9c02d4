"""The forecast's backlog per channel: counted at most once a `fresh_for`, plus this
process's own additions (outbox/ahead.py)."""

from __future__ import annotations

from mailvia.outbox.ahead import QueuedAhead


class Counter:
    def __init__(self, waiting: dict[str, int]) -> None:
        self.waiting = waiting
        self.calls: list[str] = []

    def __call__(self, channel_id: str) -> int:
        self.calls.append(channel_id)
        return self.waiting[channel_id]


def test_a_count_is_kept_for_fresh_for_and_grows_with_what_was_added() -> None:
    store = Counter({"ch_a": 10, "ch_b": 3})
    ahead = QueuedAhead(store, fresh_for=1.0)
    assert ahead.waiting("ch_a", 100.0) == 10
    ahead.added("ch_a")
    ahead.added("ch_a", 2)
    store.waiting["ch_a"] = 50  # others' work: not seen until the count is stale
    assert ahead.waiting("ch_a", 100.9) == 13
    assert ahead.waiting("ch_b", 100.9) == 3  # each channel has its own count
    assert store.calls == ["ch_a", "ch_b"]
    assert ahead.waiting("ch_a", 101.0) == 50  # a second later: counted again
    assert store.calls == ["ch_a", "ch_b", "ch_a"]


def test_a_clock_that_went_back_counts_again() -> None:
    store = Counter({"ch_a": 10})
    ahead = QueuedAhead(store, fresh_for=1.0)
    assert ahead.waiting("ch_a", 100.0) == 10
    store.waiting["ch_a"] = 4
    assert ahead.waiting("ch_a", 99.5) == 4
    assert len(store.calls) == 2


def test_additions_to_a_channel_never_counted_are_not_kept() -> None:
    """Its first count will see them: nothing to add them to."""
    store = Counter({"ch_a": 7})
    ahead = QueuedAhead(store)
    ahead.added("ch_a", 5)
    assert ahead.waiting("ch_a", 100.0) == 7
