"""A channel is made from its row once per distinct row (store/channels.channel_of): every
single POST reads its organization's channels for its route, and making each anew cost about
as much as the read. A row that changed in any column is made anew: what comes back is
always what was read."""

from __future__ import annotations

import time
from pathlib import Path

from mailvia.domain.channel import Auth, Security
from support.world import World


async def test_a_channel_read_twice_unchanged_is_made_once(tmp_path: Path) -> None:
    world = World(tmp_path / "data")
    try:
        world.channel(9, security=Security.NONE, auth=Auth.NONE)
        store = world.store
        [first] = store.list_channels()
        [again] = store.list_channels()
        assert again is first  # made once (each read made its own before)
        assert store.get_channel(first.id) is first
    finally:
        await world.close()


async def test_a_changed_channel_row_is_made_anew(tmp_path: Path) -> None:
    world = World(tmp_path / "data")
    try:
        world.channel(9, security=Security.NONE, auth=Auth.NONE)
        store = world.store
        [first] = store.list_channels()
        until = time.time() + 60
        store.set_channel_throttle(first.id, until, 2)
        [throttled] = store.list_channels()
        assert (throttled.throttled_until, throttled.throttle_level) == (until, 2)
        assert (first.throttled_until, first.throttle_level) == (None, 0)  # unchanged
        store.set_channel_throttle(first.id, None, 0)
        [back] = store.list_channels()
        assert back == first
        assert (back.throttled_until, back.throttle_level) == (None, 0)
    finally:
        await world.close()
