"""The ways out of a wrong channel over HTTP (outbox/mend.py): PATCH any field, tested before
it is saved (422 with the report when the test fails; `"test": false` saves anyway); DELETE a
channel with mail (409 naming the choices, `?mail=cancel`, `?mail=move&to=`); cancel a
channel's mail or one message. Real test SMTP servers on 127.0.0.1, the real SQLite store,
the dispatcher driven by `run_once`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, ChannelState
from mailvia.domain.message import State
from mailvia.testserver import TestServer
from support.api import Api, assert_problem, open_api
from support.ports import closed_port
from support.world import Certs, make_certs


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data") as api:
        yield api


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


async def deliver(api: Api) -> None:
    await api.world.services.dispatcher.run_once(time.time)


def subject(content: bytes) -> str:
    return str(BytesParser(policy=default).parsebytes(content)["subject"])


def state_of(api: Api, message_id: str) -> State:
    return api.world.store.get_message(message_id).state


async def test_a_wrong_port_is_fixed_after_a_test_and_the_waiting_mail_leaves_now(
    api: Api, certs: Certs
) -> None:
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "right"}) as smtp:
        channel = api.jane_channel(closed_port(), certs=certs, password="right")
        sent = api.world.send()[0].id
        await deliver(api)
        assert state_of(api, sent) is State.DEFERRED
        jane, url = api.client("jane"), f"/v1/channels/{channel.id}"

        refused = await jane.patch(url, json={"port": closed_port()})
        body = assert_problem(refused, 422, "failed its test", "nothing was saved")
        assert body["test"]["ok"] is False
        assert next(s for s in body["test"]["steps"] if not s["ok"])["name"] == "connect"
        assert api.world.store.get_channel(channel.id).port == channel.port  # unchanged

        fixed = await jane.patch(url, json={"port": smtp.port})
        assert fixed.status_code == 200, fixed.text
        out = fixed.json()
        assert out["port"] == smtp.port and out["test"]["ok"] is True and out["retried"] == 1
        assert "right" not in fixed.text
        await deliver(api)  # due now, not in five minutes
        assert state_of(api, sent) is State.DELIVERED
        assert len(smtp.received) == 1


async def test_a_disconnected_channel_whose_sign_in_is_fixed_comes_back_with_its_mail(
    api: Api, certs: Certs
) -> None:
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "right"}) as smtp:
        channel = api.jane_channel(smtp.port, certs=certs, auth=Auth.NONE, max_connections=1)
        first, second = (r.id for r in api.world.send(count=2))
        await deliver(api)  # 530: the server needs a sign-in; the channel is disconnected
        assert api.world.store.get_channel(channel.id).state is ChannelState.DISCONNECTED
        assert state_of(api, first) is State.HELD and state_of(api, second) is State.HELD
        jane, url = api.client("jane"), f"/v1/channels/{channel.id}"

        wrong = {"auth": "plain", "username": "jane", "password": "wrong"}
        refused = assert_problem(await jane.patch(url, json=wrong), 422, "at auth")
        assert refused["test"]["steps"][-1]["reply"].startswith("535")
        assert "wrong" not in str(refused)
        assert api.world.store.get_channel(channel.id).auth is Auth.NONE

        fixed = await jane.patch(url, json=wrong | {"password": "right"})
        assert fixed.status_code == 200, fixed.text
        out = fixed.json()
        assert out["reconnected"] is True and out["released"] == 2 and out["state"] == "active"
        assert out["auth"] == "plain" and out["has_password"] is True and "password" not in out
        await deliver(api)
        assert [state_of(api, m) for m in (first, second)] == [State.DELIVERED] * 2
        subjects = [subject(m["content"]) for m in smtp.received]
        assert subjects == ["hello 0", "hello 1"]  # in their order, each once
        events = (await jane.get("/v1/events")).json()["data"]
        assert "channel.reconnected" in [e["type"] for e in events]


async def test_an_edit_saved_without_its_test_and_one_that_needs_none(api: Api) -> None:
    channel = api.jane_channel(closed_port())
    jane, url = api.client("jane"), f"/v1/channels/{channel.id}"
    renamed = await jane.patch(url, json={"name": "jane-new", "max_connections": 2})
    assert renamed.status_code == 200 and renamed.json()["test"] is None
    assert renamed.json()["name"] == "jane-new" and renamed.json()["max_connections"] == 2
    untested = await jane.patch(url, json={"host": "localhost", "security": "tls", "test": False})
    assert untested.status_code == 200, untested.text
    assert untested.json()["host"] == "localhost" and untested.json()["security"] == "tls"
    assert untested.json()["test"] is None


async def test_who_may_edit_and_what_is_refused(api: Api) -> None:
    channel = api.jane_channel(closed_port())
    relay = api.team_channel()
    url = f"/v1/channels/{channel.id}"
    assert_problem(await api.client("joe").patch(url, json={"name": "x"}), 404)
    assert_problem(await api.client("ann").patch(url, json={"name": "x"}), 404)
    relay_url = f"/v1/channels/{relay.id}"
    assert_problem(await api.client("joe").patch(relay_url, json={"name": "x"}), 403)
    jane = api.client("jane")
    assert_problem(await jane.patch(url, json={"colour": "red"}), 422)
    for port in (0, 65536, "25"):
        assert_problem(await jane.patch(url, json={"port": port, "test": False}), 422)
    assert_problem(await jane.patch(url, json={"security": "ssl"}), 422)
    clear = {"security": "none", "auth": "plain", "test": False}
    assert_problem(await jane.patch(url, json=clear), 422, "security none")
    boss = api.client("boss")
    edited = await boss.patch(url, json={"name": "renamed-by-admin"})
    assert edited.status_code == 200 and edited.json()["name"] == "renamed-by-admin"


async def test_removing_a_channel_with_mail_asks_what_becomes_of_it(api: Api) -> None:
    channel = api.jane_channel(closed_port())
    first, second = (r.id for r in api.world.send(count=2))
    jane, url = api.client("jane"), f"/v1/channels/{channel.id}"
    asked = assert_problem(await jane.delete(url), 409, "2 message(s)", "mail=cancel", "move")
    assert asked
    assert_problem(await jane.delete(url + "?mail=move"), 422, "to")
    assert_problem(await jane.delete(url + "?to=acme-relay"), 422, "to")
    assert_problem(await jane.delete(url + "?mail=burn"), 422)
    assert_problem(await api.client("joe").delete(url + "?mail=cancel"), 404)
    assert state_of(api, first) is State.QUEUED

    done = await jane.delete(url + "?mail=cancel")
    assert done.status_code == 200, done.text
    assert done.json() == {"removed": True, "cancelled": 2, "moved": 0, "kept": []}
    assert state_of(api, first) is State.CANCELLED and state_of(api, second) is State.CANCELLED
    shown = (await jane.get(f"/v1/messages/{first}")).json()
    assert "removed" in shown["recipients"][0]["reply"]["text"]
    events = (await jane.get("/v1/events")).json()["data"]
    cancelled = [e["data"] for e in events if e["type"] == "message.cancelled"]
    assert {c["message_id"] for c in cancelled} == {first, second}
    assert all("jane@acme.test" in c["reason"] for c in cancelled)
    assert_problem(await jane.get(url), 404)


async def test_mail_moves_where_its_sender_may_send_and_the_rest_stays(api: Api) -> None:
    relay = api.team_channel(port=closed_port())
    janes = api.world.send()[0].id  # through the team channel: jane has none of her own yet
    boss = api.client("boss")
    bosses = (
        await boss.post(
            "/v1/messages",
            json={"from": "boss@acme.test", "to": ["x@example.com"], "subject": "s", "text": "t"},
        )
    ).json()["id"]
    box = api.jane_channel(closed_port())
    url = f"/v1/channels/{relay.id}"
    assert_problem(await boss.delete(url + f"?mail=move&to={relay.id}"), 422, "already")

    partly = await boss.delete(url + f"?mail=move&to={box.name}")
    assert partly.status_code == 200, partly.text
    out = partly.json()
    assert out["removed"] is False and out["moved"] == 1 and out["cancelled"] == 0
    assert [k["id"] for k in out["kept"]] == [bosses]
    assert "mailbox" in out["kept"][0]["reason"]
    moved = api.world.store.get_message(janes)
    assert moved.channel_id == box.id and moved.state is State.QUEUED
    assert api.world.store.get_message(bosses).channel_id == relay.id

    rest = await boss.delete(url + "?mail=cancel")
    assert rest.json() == {"removed": True, "cancelled": 1, "moved": 0, "kept": []}
    assert state_of(api, bosses) is State.CANCELLED and state_of(api, janes) is State.QUEUED


async def test_moving_to_a_disconnected_channel_holds_the_mail_there(api: Api) -> None:
    relay = api.team_channel(port=closed_port())
    sent = api.world.send()[0].id
    box = api.jane_channel(closed_port())
    api.world.store.set_channel_state(box.id, ChannelState.DISCONNECTED, "535", time.time())
    done = await api.client("jane").delete(
        f"/v1/channels/{relay.id}?mail=move&to={box.id}",
        headers={"Authorization": f"Bearer {api.tokens['boss']}"},
    )
    assert done.json()["moved"] == 1 and done.json()["removed"] is True
    assert state_of(api, sent) is State.HELD
    assert api.world.store.get_message(sent).channel_id == box.id


async def test_cancelling_a_channels_mail_and_one_message(api: Api) -> None:
    channel = api.jane_channel(closed_port())
    first, second, third = (r.id for r in api.world.send(count=3))
    jane = api.client("jane")
    one = await jane.post(f"/v1/messages/{first}/cancel")
    assert one.status_code == 200 and one.json()["state"] == "cancelled"
    url = f"/v1/channels/{channel.id}/cancel-mail"
    assert_problem(await api.client("joe").post(url), 404)
    assert_problem(await api.client("ann").post(url), 404)
    done = await jane.post(url)
    assert done.status_code == 200 and done.json() == {"cancelled": 2}
    assert state_of(api, second) is State.CANCELLED and state_of(api, third) is State.CANCELLED
    assert (await jane.post(url)).json() == {"cancelled": 0}
    assert_problem(await jane.post(f"/v1/messages/{first}/cancel"), 409, "already cancelled")
    events = (await jane.get("/v1/events")).json()["data"]
    assert [e["data"]["message_id"] for e in events if e["type"] == "message.cancelled"] == [
        first,
        second,
        third,
    ]
    # The channel has no mail left: it is removed with 204 as before.
    assert (await jane.delete(f"/v1/channels/{channel.id}")).status_code == 204
