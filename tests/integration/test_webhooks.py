"""Webhooks end to end: the real API, store and dispatchers, mail to the project's test SMTP
server, and events POSTed to a real HTTP receiver on 127.0.0.1 (MAILVIA_ALLOW_PRIVATE_HOSTS
lets it through). Time is driven with run_once(SteppingClock(now)); nothing sleeps for work."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier

from mailvia.app import build
from mailvia.domain.clock import SteppingClock
from mailvia.outbox.dispatch import new_event
from mailvia.outbox.webhook_dispatch import WebhookDispatcher
from mailvia.testserver import TestServer
from mailvia.transport.guard import REFUSED_MESSAGE
from support.api import Api, assert_problem
from support.receiver import Received, Receiver
from support.world import Certs, World, make_certs


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data"))
    yield api
    await api.aclose()


def dispatcher(api: Api) -> WebhookDispatcher:
    found = api.world.services.webhook_dispatcher
    assert found is not None
    return found


async def subscribe(api: Api, url: str, **body: Any) -> dict[str, Any]:
    response = await api.client("boss").post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def emit(api: Api, type_: str, now: float, **data: object) -> str:
    event = new_event(api.world.admin.organization_id, type_, now, dict(data))
    api.world.store.add_events([event])
    return event.id


async def attempts(api: Api, webhook_id: str, user: str = "boss") -> list[dict[str, Any]]:
    response = await api.client(user).get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def verified(secret: str, request: Received) -> dict[str, Any]:
    """The payload, once its Standard Webhooks signature checks out."""
    payload: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return payload


async def test_a_delivered_message_is_posted_signed_and_logged(api: Api, tmp_path: Path) -> None:
    certs: Certs = make_certs(tmp_path / "certs")
    with Receiver() as hooks:
        made = await subscribe(api, hooks.url())
        assert made["secret"].startswith("whsec_") and made["events"][0] == "message.delivered"
        async with TestServer(
            tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "secret"}
        ) as smtp:
            api.jane_channel(smtp.port, certs=certs)
            receipt = api.world.send()[0]
            assert await api.world.services.dispatcher.run_once(time.time) == 1
        assert await dispatcher(api).run_once(time.time) == 1
        (request,) = hooks.wait_for(1)
    payload = verified(made["secret"], request)
    assert payload["type"] == "message.delivered" and payload["id"] == request.headers["webhook-id"]
    assert payload["data"]["message_id"] == receipt.id and payload["data"]["state"] == "delivered"
    assert set(payload) == {"id", "type", "created_at", "data"}
    assert request.headers["content-type"] == "application/json"
    (attempt,) = await attempts(api, made["id"])
    assert attempt["event_id"] == payload["id"] and attempt["event_type"] == "message.delivered"
    assert attempt["status"] == 204 and attempt["outcome"] == "delivered"
    assert attempt["error"] is None and attempt["next_attempt_at"] is None
    assert attempt["attempt"] == 1 and attempt["duration_ms"] >= 0


async def test_the_secret_is_shown_once_and_sealed_at_rest(api: Api) -> None:
    made = await subscribe(api, "http://127.0.0.1:9/hook", events=["channel.disconnected"])
    secret = made["secret"]
    listed = await api.client("boss").get("/v1/webhooks")
    assert listed.json()["data"] == [{k: v for k, v in made.items() if k != "secret"}]
    assert made["events"] == ["channel.disconnected"]
    for path in ("/v1/webhooks", f"/v1/webhooks/{made['id']}/deliveries"):
        assert secret not in (await api.client("boss").get(path)).text
    raw_key = secret.removeprefix("whsec_").encode()
    for file in api.world.settings.data_dir.glob("mailvia.db*"):
        content = file.read_bytes()
        assert secret.encode() not in content and raw_key not in content


async def test_a_failed_post_is_retried_with_backoff(api: Api) -> None:
    with Receiver([500]) as hooks:
        made = await subscribe(api, hooks.url())
        now = time.time()
        event_id = emit(api, "message.bounced", now, message_id="msg_x")
        assert await dispatcher(api).run_once(SteppingClock(now)) == 1
        assert (
            await dispatcher(api).run_once(SteppingClock(now + 5)) == 0
        )  # the first retry is 10 s later
        assert await dispatcher(api).run_once(SteppingClock(now + 11)) == 1
        first, second = hooks.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert verified(made["secret"], second)["id"] == event_id
    newest, oldest = await attempts(api, made["id"])
    assert (oldest["status"], oldest["outcome"], oldest["attempt"]) == (500, "retry", 1)
    assert oldest["next_attempt_at"] is not None
    assert (newest["status"], newest["outcome"], newest["attempt"]) == (204, "delivered", 2)


async def test_an_event_that_keeps_failing_blocks_no_later_one_and_is_given_up(api: Api) -> None:
    def answer(request: Received) -> int:
        return 500 if json.loads(request.body)["data"].get("bad") else 200

    with Receiver(answer) as hooks:
        made = await subscribe(api, hooks.url(), events=["message.bounced"])
        now = time.time()
        emit(api, "message.bounced", now, bad=True)
        emit(api, "message.delivered", now)  # not subscribed
        assert await dispatcher(api).run_once(SteppingClock(now)) == 1
        good = emit(api, "message.bounced", now + 1)
        assert (
            await dispatcher(api).run_once(SteppingClock(now + 2)) == 1
        )  # the new event goes at once
        at = now + 2
        for _ in range(60):
            at += 3600
            await dispatcher(api).run_once(SteppingClock(at))
        sent = [r.headers["webhook-id"] for r in hooks.requests]
    assert sent.count(good) == 1
    log = await attempts(api, made["id"])
    given_up = log[0]
    assert given_up["outcome"] == "failed" and given_up["next_attempt_at"] is None
    assert {a["outcome"] for a in log[1:]} == {"retry", "delivered"}
    assert len(log) < 40  # 10 s doubling to an hour apart, for 24 h


async def test_a_webhook_to_loopback_is_refused_without_the_allow_list(tmp_path: Path) -> None:
    api = Api(World(tmp_path / "data", allow_private_hosts=""))
    try:
        with Receiver() as hooks:
            for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
                url = hooks.url(host=host)
                response = await api.client("boss").post("/v1/webhooks", json={"url": url})
                body = assert_problem(response, 422)
                assert body["detail"] == REFUSED_MESSAGE
            assert hooks.connections == 0 and hooks.requests == []
    finally:
        await api.aclose()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.example.com/x", ["https"]),
        ("https://user:pw@127.0.0.1/x", ["credentials"]),
        ("https://127.0.0.1/x#frag", ["fragment"]),
        ("hooks.example.com/x", ["https"]),
        ("https://no-such-host.invalid/x", ["resolve"]),
    ],
)
async def test_bad_webhook_urls_are_422(api: Api, url: str, words: list[str]) -> None:
    response = await api.client("boss").post("/v1/webhooks", json={"url": url})
    assert_problem(response, 422, *words)


async def test_unknown_event_types_are_422(api: Api) -> None:
    body = {"url": "http://127.0.0.1:9/", "events": ["message.sent"]}
    assert_problem(await api.client("boss").post("/v1/webhooks", json=body), 422)
    body["events"] = []
    assert_problem(await api.client("boss").post("/v1/webhooks", json=body), 422)


async def test_only_the_organizations_admins_see_and_remove_a_webhook(api: Api) -> None:
    made = await subscribe(api, "http://127.0.0.1:9/hook")
    path = f"/v1/webhooks/{made['id']}"
    ann, jane, boss = api.client("ann"), api.client("jane"), api.client("boss")
    assert (await ann.get("/v1/webhooks")).json()["data"] == []
    assert_problem(await ann.get(f"{path}/deliveries"), 404)
    assert_problem(await ann.delete(path), 404)
    assert_problem(await jane.get("/v1/webhooks"), 403, "admins")
    assert_problem(await jane.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/"}), 403)
    assert_problem(await jane.delete(path), 403)
    assert (await boss.delete(path)).status_code == 204
    assert_problem(await boss.delete(path), 404)
    assert (await boss.get("/v1/webhooks")).json()["data"] == []


async def test_a_webhook_gets_only_events_after_it_was_made(api: Api) -> None:
    now = time.time()
    emit(api, "message.delivered", now)
    with Receiver() as hooks:
        await subscribe(api, hooks.url())
        assert await dispatcher(api).run_once(SteppingClock(now)) == 0
        later = emit(api, "message.held", now + 1)
        assert await dispatcher(api).run_once(SteppingClock(now + 1)) == 1
        (request,) = hooks.wait_for(1)
    assert request.headers["webhook-id"] == later


async def test_a_removed_webhook_gets_nothing_more(api: Api) -> None:
    with Receiver([500]) as hooks:
        made = await subscribe(api, hooks.url())
        now = time.time()
        emit(api, "message.delivered", now)
        assert await dispatcher(api).run_once(SteppingClock(now)) == 1
        assert (await api.client("boss").delete(f"/v1/webhooks/{made['id']}")).status_code == 204
        emit(api, "message.delivered", now + 1)
        assert await dispatcher(api).run_once(SteppingClock(now + 60)) == 0
        assert len(hooks.requests) == 1


async def test_key_rotation_rewraps_the_signing_secret(api: Api) -> None:
    with Receiver() as hooks:
        made = await subscribe(api, hooks.url())
        rotate = api.world.services.rotate_key
        assert rotate is not None
        rotate()
        restarted = build(api.world.settings)  # opens the vault with the new master key
        try:
            emit(api, "message.held", time.time())
            assert restarted.webhook_dispatcher is not None
            assert await restarted.webhook_dispatcher.run_once(time.time) == 1
        finally:
            await restarted.aclose()
        (request,) = hooks.wait_for(1)
    assert verified(made["secret"], request)["type"] == "message.held"
