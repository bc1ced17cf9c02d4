"""The shared pool, where mail goes that no other channel takes, is listed with the channels
everyone sees: `mailvia channel list` (text: marked as the pool; JSON: kind `pool`) and
`GET /v1/channels`, for members and admins, without the relay's login. Without POOL_RELAY
there is no pool to list. The CLI as the real console script on the world's data folder."""

from __future__ import annotations

import time
from pathlib import Path

from mailvia.domain.channel import ChannelState
from support.api import Api
from support.cli import Cli, require_console_script
from support.world import World

RELAY = "smtp://pool-login:pool-pass@relay.example.net:2525?security=starttls"


async def test_channel_list_and_the_api_show_the_shared_pool(tmp_path: Path) -> None:
    require_console_script()
    api = Api(World(tmp_path / "data", pool_relay=RELAY))
    try:
        api.jane_channel()
        # The relay's reply (the operator's, perhaps naming its account) is not shown.
        api.world.store.set_channel_throttle("ch_pool", None, 0)
        reason = "421 4.7.0 relay account acct-4711 over its quota"
        api.world.store.set_channel_state("ch_pool", ChannelState.ACTIVE, reason, time.time())
        cli = Cli(api.world.settings.data_dir, MAILVIA_POOL_RELAY=RELAY)
        text = cli.ok("channel", "list", "--org", "acme").lines
        assert [line.split()[0] for line in text] == ["jane-box", "shared"]
        assert "pool" in text[1].split() and "any address (the shared pool)" in text[1]
        assert "relay.example.net:2525" in text[1] and "ch_pool" in text[1]
        listed = cli.ok("channel", "list", "--org", "acme", "--json").json()
        kinds = [(c["name"], c["kind"]) for c in listed]
        assert kinds == [("jane-box", "smtp"), ("shared pool", "pool")]
        assert listed[1]["username"] is None and "pool-login" not in str(listed)
        assert listed[1]["owner"] is None and "_platform" not in str(listed)
        assert listed[1]["state_reason"] is None and "acct-4711" not in str(listed)
        shown = cli.run("channel", "show", "ch_pool", "--org", "acme", "--json")
        assert shown.code != 0 and "ch_pool" in shown.stderr, str(shown)
        for user in ("jane", "joe", "boss"):
            data = (await api.client(user).get("/v1/channels")).json()["data"]
            pools = [c for c in data if c["kind"] == "pool"]
            assert [(c["id"], c["name"], c["username"], c["owner"]) for c in pools] == [
                ("ch_pool", "shared pool", None, None)
            ], user
            assert "_platform" not in str(data) and "acct-4711" not in str(data), user
            got = await api.client(user).get("/v1/channels/ch_pool")
            assert got.status_code == 404, user
    finally:
        await api.aclose()


async def test_without_a_pool_relay_no_pool_is_listed(tmp_path: Path) -> None:
    require_console_script()
    world = World(tmp_path / "data")
    try:
        world.channel(2525)
        listed = Cli(world.settings.data_dir).ok("channel", "list", "--org", "acme", "--json")
        assert [c["kind"] for c in listed.json()] == ["smtp"]
    finally:
        await world.close()
