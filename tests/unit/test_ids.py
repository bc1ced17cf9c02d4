"""Object ids: make_id's pairwise encoding gives the characters of the one-at-a-time
definition (`_b32`), and event ids' pooled randomness is never shared with a forked child."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from mailvia.domain.ids import _b32, make_id
from mailvia.outbox.run_context import new_event


@given(
    now=st.floats(min_value=0, max_value=1e16, allow_nan=False),
    entropy=st.binary(min_size=10, max_size=16),
)
def test_make_id_is_the_base32_of_millis_and_entropy(now: float, entropy: bytes) -> None:
    millis = int(now * 1000) & ((1 << 50) - 1)
    expected = f"evt_{_b32(millis, 10)}{_b32(int.from_bytes(entropy[:10], 'big'), 16)}"
    assert make_id("evt", now, entropy) == expected


def test_event_ids_are_distinct_and_a_forked_child_draws_its_own() -> None:
    parent = [new_event("org", "t", 1.0, {}).id for _ in range(1000)]
    assert len(set(parent)) == 1000
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the next ids it makes, for the parent to compare
        os.close(reader)
        os.write(writer, " ".join(new_event("org", "t", 1.0, {}).id for _ in range(5)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert not set(child) & {new_event("org", "t", 1.0, {}).id for _ in range(5)}
