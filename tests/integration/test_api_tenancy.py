"""Tenancy over the HTTP API: another organization sees nothing of acme's (404, empty lists),
members see only their own messages and the channels they may see, admins the organization;
channels, the organization's settings, and events after a real delivery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.testserver import TestServer
from support.api import Api, assert_problem, message, open_api
from support.world import make_certs


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data") as api:
        yield api


async def test_another_organization_gets_404_and_sees_nothing(api: Api) -> None:
    channel = api.jane_channel()
    api.team_channel("globex")
    sent = (await api.client("jane").post("/v1/messages", json=message())).json()
    ann = api.client("ann")
    assert_problem(await ann.get(f"/v1/messages/{sent['id']}"), 404)
    assert_problem(await ann.post(f"/v1/messages/{sent['id']}/cancel"), 404)
    for ref in (channel.id, channel.name):
        assert_problem(await ann.get(f"/v1/channels/{ref}"), 404)
        assert_problem(await ann.patch(f"/v1/channels/{ref}", json={"name": "mine"}), 404)
        assert_problem(await ann.post(f"/v1/channels/{ref}/pause"), 404)
        assert_problem(await ann.delete(f"/v1/channels/{ref}"), 404)
    assert (await ann.get("/v1/messages")).json()["data"] == []
    assert [c["name"] for c in (await ann.get("/v1/channels")).json()["data"]] == ["globex-relay"]
    # Nor can ann send through acme's channel or make it her default.
    response = await ann.post("/v1/messages", json=message(**{"from": "jane@acme.test"}))
    assert_problem(response, 403)
    patch = await ann.patch("/v1/organization", json={"default_channel_id": channel.id})
    assert_problem(patch, 422, "no channel")
    # And her own mail goes through her own organization's channel.
    own = await ann.post("/v1/messages", json=message(**{"from": "ann@globex.test"}))
    assert own.status_code == 202 and own.json()["channel"]["name"] == "globex-relay"
    assert (await api.client("jane").get(f"/v1/messages/{sent['id']}")).status_code == 200


async def test_members_see_their_own_messages_and_admins_the_organizations(api: Api) -> None:
    jane_box = api.jane_channel()
    api.team_channel()
    jane, joe, boss = api.client("jane"), api.client("joe"), api.client("boss")
    mine = (await jane.post("/v1/messages", json=message())).json()["id"]
    joes = (await joe.post("/v1/messages", json=message(**{"from": "joe@acme.test"}))).json()
    assert joes["channel"]["name"] == "acme-relay"
    assert_problem(await joe.get(f"/v1/messages/{mine}"), 404)
    assert [m["id"] for m in (await joe.get("/v1/messages")).json()["data"]] == [joes["id"]]
    assert [m["id"] for m in (await jane.get("/v1/messages")).json()["data"]] == [mine]
    everyone = {m["id"] for m in (await boss.get("/v1/messages")).json()["data"]}
    assert everyone == {mine, joes["id"]}
    assert (await boss.get(f"/v1/messages/{mine}")).status_code == 200
    # Joe sees his team's channel, not jane's own; boss sees both.
    assert [c["name"] for c in (await joe.get("/v1/channels")).json()["data"]] == ["acme-relay"]
    assert_problem(await joe.get(f"/v1/channels/{jane_box.id}"), 404)
    names = [c["name"] for c in (await boss.get("/v1/channels")).json()["data"]]
    assert names == ["acme-relay", "jane-box"]
    # A member may not change the team's channel.
    assert_problem(await joe.post("/v1/channels/acme-relay/pause"), 403)


async def test_organization_settings_admins_change_members_read(api: Api) -> None:
    relay = api.team_channel()
    jane, boss = api.client("jane"), api.client("boss")
    org = (await jane.get("/v1/organization")).json()
    assert org["name"] == "acme" and org["default_channel_id"] is None
    assert org["fallback"] == "hold"
    assert_problem(await jane.patch("/v1/organization", json={"fallback": "next"}), 403, "admin")
    response = await boss.patch(
        "/v1/organization", json={"default_channel_id": "acme-relay", "fallback": "next"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["default_channel_id"] == relay.id
    assert response.json()["fallback"] == "next"
    cleared = await boss.patch("/v1/organization", json={"default_channel_id": None})
    assert cleared.json() | {"id": ""} == {
        "id": "",
        "name": "acme",
        "default_channel_id": None,
        "fallback": "next",
    }
    assert_problem(await boss.patch("/v1/organization", json={"fallback": "drop"}), 422)


async def test_a_members_mailbox_is_never_the_organizations_default(api: Api) -> None:
    mailbox = api.jane_channel()
    boss = api.client("boss")
    for ref in (mailbox.id, mailbox.name):
        refused = await boss.patch("/v1/organization", json={"default_channel_id": ref})
        assert_problem(refused, 422, "address-scoped", "jane@acme.test", "default")
    missing = await boss.patch("/v1/organization", json={"default_channel_id": "nope"})
    assert_problem(missing, 422, "no channel 'nope'")
    assert (await boss.get("/v1/organization")).json()["default_channel_id"] is None


async def test_channels_add_show_change_pause_resume_remove(api: Api) -> None:
    jane, boss = api.client("jane"), api.client("boss")
    body = {
        "name": "my box",
        "host": "smtp.acme.test",
        "username": "jane@acme.test",
        "password": "s3cret",
        "budgets": [{"count": 30, "per_seconds": 60}],
    }
    response = await jane.post("/v1/channels", json=body)
    assert response.status_code == 201, response.text
    channel = response.json()
    assert response.headers["location"] == f"/v1/channels/{channel['id']}"
    assert channel["has_password"] is True and "password" not in channel
    assert "s3cret" not in response.text
    assert channel["scope"] == "address" and channel["address"] == "jane@acme.test"
    assert channel["owner"] == {"user": api.world.jane.id}
    assert channel["budgets"] == [{"count": 30, "per_seconds": 60.0, "unit": "messages"}]
    assert_problem(await jane.post("/v1/channels", json=body), 409, "already exists")
    another = body | {"name": "box two"}  # one own channel per address
    assert_problem(await jane.post("/v1/channels", json=another), 409, "already has its own")

    # A new password is tested before it is saved; smtp.acme.test is nowhere: save untested.
    patch = {"name": "jane's box", "max_connections": 2, "password": "n3w", "test": False}
    changed = (await jane.patch(f"/v1/channels/{channel['id']}", json=patch)).json()
    assert changed["name"] == "jane's box" and changed["max_connections"] == 2
    assert changed["host"] == "smtp.acme.test" and changed["budgets"] == channel["budgets"]
    services = api.world.services
    credentials = services.channels.credentials(api.world.store.get_channel(channel["id"]))
    assert credentials is not None and credentials.password == "n3w"
    assert_problem(await jane.patch(f"/v1/channels/{channel['id']}", json={"kind": "pool"}), 422)

    paused = (await jane.post(f"/v1/channels/{channel['id']}/pause")).json()
    assert paused["channel"]["state"] == "paused" and paused["held"] == 0
    held = (await jane.post("/v1/messages", json=message())).json()
    assert held["state"] == "held" and held["warnings"][0]["code"] == "channel_paused"
    resumed = (await jane.post(f"/v1/channels/{channel['id']}/resume")).json()
    assert resumed["channel"]["state"] == "active" and resumed["released"] == 1
    assert_problem(await jane.delete(f"/v1/channels/{channel['id']}"), 409, "to send")
    await jane.post(f"/v1/messages/{held['id']}/cancel")
    assert (await jane.delete(f"/v1/channels/{channel['id']}")).status_code == 204
    assert_problem(await boss.get(f"/v1/channels/{channel['id']}"), 404)


async def test_channel_owners_presets_and_rights(api: Api) -> None:
    jane, boss = api.client("jane"), api.client("boss")
    team = {"name": "relay", "host": "smtp.acme.test", "auth": "none", "domains": ["acme.test"]}
    assert_problem(await jane.post("/v1/channels", json=team), 403, "admins")
    created = await boss.post("/v1/channels", json=team | {"owner": {"team": "sales"}})
    assert created.status_code == 201, created.text
    assert created.json()["scope"] == "domain" and "team" in created.json()["owner"]
    nobody = team | {"name": "r2", "owner": {"team": "nobody"}}
    assert_problem(await boss.post("/v1/channels", json=nobody), 404)
    # An admin connects a channel for a rep, naming them by email or by id (one own channel
    # per address: each for another of jane's addresses).
    for address in ("jane.b@acme.test", "jane.x@acme.test"):
        api.world.services.tenancy.grant("jane@acme.test", address, time.time())
    for name, owner, address in (
        ("m365", "jane@acme.test", "jane@acme.test"),
        ("m365-b", api.world.jane.id, "jane.b@acme.test"),
    ):
        body = {
            "name": name,
            "preset": "microsoft365",
            "owner": {"user": owner},
            "username": "jane@acme.test",
            "address": address,
            "password": "pw",
        }
        response = await boss.post("/v1/channels", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["owner"] == {"user": api.world.jane.id}
        assert response.json()["host"] == "smtp.office365.com"
        assert [w["code"] for w in response.json()["warnings"]] == ["preset_advice"]
    elsewhere = {
        "name": "x",
        "preset": "gmail",
        "host": "smtp.acme.test",
        "username": "jane@acme.test",
        "address": "jane.x@acme.test",
    }
    response = await jane.post("/v1/channels", json=elsewhere)
    assert response.status_code == 201, response.text
    warned = response.json()
    assert "preset_host" in [w["code"] for w in warned["warnings"]]
    assert_problem(await jane.post("/v1/channels", json={"name": "y", "preset": "aol"}), 422)
    for_joe = {"name": "z", "host": "h.acme.test", "owner": {"user": "joe@acme.test"}}
    assert_problem(await jane.post("/v1/channels", json=for_joe), 403)
    # Not found says where it looked; the organization's users only to an admin.
    for_nobody = for_joe | {"owner": {"user": "usr_nobody"}}
    hidden = await jane.post("/v1/channels", json=for_nobody)
    assert_problem(hidden, 404, "no user 'usr_nobody' in organization acme")
    assert "@" not in hidden.json()["detail"]
    shown = await boss.post("/v1/channels", json=for_nobody)
    assert_problem(shown, 404, "no user 'usr_nobody' in organization acme; its users: ")
    assert "jane@acme.test" in shown.json()["detail"]
    plain = {"name": "p", "host": "mail.example.com", "security": "none", "auth": "none"}
    assert_problem(await jane.post("/v1/channels", json=plain), 422)
    presets = (await jane.get("/v1/presets")).json()["data"]
    assert {"microsoft365", "gmail", "ses"} <= {p["name"] for p in presets}


async def test_events_show_a_delivery_to_its_organization_only(api: Api, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    async with TestServer(
        tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "secret"}, maildir=tmp_path / "mail"
    ) as server:
        api.jane_channel(server.port, certs=certs)
        jane = api.client("jane")
        assert (await jane.get("/v1/events")).json() == {"data": [], "next_cursor": None}
        sent = (await jane.post("/v1/messages", json=message())).json()
        assert await api.world.services.dispatcher.run_once(time.time) >= 1
        await server.wait_for(1)
    page = (await jane.get("/v1/events")).json()
    delivered = [e for e in page["data"] if e["type"] == "message.delivered"]
    assert [e["data"]["message_id"] for e in delivered] == [sent["id"]]
    assert delivered[0]["created_at"].endswith("Z")
    after = (await jane.get("/v1/events", params={"cursor": page["next_cursor"]})).json()
    assert after == {"data": [], "next_cursor": page["next_cursor"]}
    assert (await api.client("boss").get("/v1/events")).json()["data"] == page["data"]
    assert (await api.client("joe").get("/v1/events")).json()["data"] == []
    assert (await api.client("ann").get("/v1/events")).json()["data"] == []
    view = (await jane.get(f"/v1/messages/{sent['id']}")).json()
    assert view["state"] == "delivered"
    assert [(a["code"], a["outcome"]) for a in view["attempts"]] == [(250, "delivered")]


async def test_every_operation_needs_a_token(api: Api) -> None:
    anonymous = api.client()
    document = (await anonymous.get("/openapi.json")).json()
    operations = [
        (method, path.replace("{id}", "x").replace("{provider}", "google"))
        for path, item in document["paths"].items()
        for method in item
        if path != "/healthz"
    ]
    assert len(operations) == 29
    for method, path in operations:
        body = {} if method in ("post", "patch") else None
        response = await anonymous.request(method.upper(), path, json=body)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer realm="mailvia"'
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/docs")).status_code == 200
