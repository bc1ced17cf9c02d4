"""Metrics: counters fed by the dispatcher and the API, gauges read from the store at each
scrape, `/metrics` behind METRICS_TOKEN (404 without the setting), and the app for its own
listener (METRICS_LISTEN). Each app has its own registry: several in one process never clash."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailvia.domain.channel import Budget
from mailvia.domain.clock import SteppingClock
from mailvia.ingress.metrics_http import metrics_app
from mailvia.outbox.dispatch import new_event
from mailvia.testserver import TestServer
from support.api import Api, assert_problem, message
from support.receiver import Receiver
from support.world import World, make_certs

TOKEN = "metrics-token-for-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data", metrics_token=TOKEN))
    yield api
    await api.aclose()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def scrape(api: Api) -> Samples:
    response = await api.client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_need_the_operator_token(api: Api) -> None:
    assert_problem(await api.client().get("/metrics"), 401)
    assert_problem(await api.client("boss").get("/metrics"), 401)  # an API token is not it
    wrong = {"Authorization": "Bearer nope"}
    assert_problem(await api.client().get("/metrics", headers=wrong), 401)
    found = await scrape(api)
    assert value(found, "mailvia_store_up") == 1.0
    assert all(name.startswith("mailvia_") for name, _ in found)


async def test_without_a_token_there_is_no_metrics_route(tmp_path: Path) -> None:
    api = Api(World(tmp_path / "data"))
    try:
        response = await api.client().get("/metrics", headers={"Authorization": "Bearer x"})
        assert_problem(response, 404)
    finally:
        await api.aclose()


async def test_counters_move_after_a_delivery_and_a_refused_submission(
    api: Api, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "secret"}) as smtp:
        channel = api.jane_channel(smtp.port, certs=certs, budgets=(Budget(30, 60),))
        api.world.send(to=("bob@example.com", "carol@example.net"))
        assert await api.world.services.dispatcher.run_once(time.time) == 1
    jane = api.client("jane")
    assert_problem(await jane.post("/v1/messages", json=message(to=["not an address"])), 422)
    assert_problem(await jane.post("/v1/messages", json=message(**{"from": "x@globex.test"})), 403)
    batch = {"messages": [message(to=["nope"]), message(to=["also nope"])]}
    assert (await jane.post("/v1/messages/batch", json=batch)).status_code == 200
    found = await scrape(api)
    ch = channel.id
    assert value(found, "mailvia_deliveries_total", channel=ch, outcome="delivered") == 2.0
    assert value(found, "mailvia_attempt_seconds_count", channel=ch) == 1.0
    assert value(found, "mailvia_messages", channel=ch, state="delivered") == 1.0
    assert value(found, "mailvia_messages", channel=ch, state="queued") == 0.0
    assert value(found, "mailvia_channel_state", channel=ch, state="active") == 1.0
    assert value(found, "mailvia_channel_state", channel=ch, state="paused") == 0.0
    budget = {"channel": ch, "unit": "messages", "window": "60"}
    assert value(found, "mailvia_budget_used", **budget) == 1.0
    assert value(found, "mailvia_budget_limit", **budget) == 30.0
    rejected = "mailvia_intake_rejections_total"
    assert value(found, rejected, intake="api", reason="invalid") == 3.0
    assert value(found, rejected, intake="api", reason="forbidden") == 1.0


async def test_webhook_attempts_are_counted(api: Api) -> None:
    dispatcher = api.world.services.webhook_dispatcher
    assert dispatcher is not None
    with Receiver([500]) as hooks:
        body = {"url": hooks.url()}
        assert (await api.client("boss").post("/v1/webhooks", json=body)).status_code == 201
        now = time.time()
        org_id = api.world.admin.organization_id
        api.world.store.add_events([new_event(org_id, "message.held", now, {})])
        await dispatcher.run_once(SteppingClock(now))
        await dispatcher.run_once(SteppingClock(now + 11))
    found = await scrape(api)
    assert value(found, "mailvia_webhook_attempts_total", outcome="retry") == 1.0
    assert value(found, "mailvia_webhook_attempts_total", outcome="delivered") == 1.0
    assert value(found, "mailvia_webhook_attempt_seconds_count") == 2.0


async def test_the_metrics_listener_app_needs_no_token(api: Api) -> None:
    transport = httpx.ASGITransport(app=metrics_app(api.world.services))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics.test") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert value(samples(response.text), "mailvia_store_up") == 1.0
        assert (await client.get("/v1/messages")).status_code == 404


async def test_a_421_lowers_the_channels_concurrency_gauge(api: Api, tmp_path: Path) -> None:
    """Row 12 of the fault matrix: "concurrency metric drops, then recovers"."""
    certs = make_certs(tmp_path / "certs")
    faults = ["mail*1=421 4.3.2 Service shutting down"]
    server = TestServer(
        tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "secret"}, faults=faults
    )
    async with server as smtp:
        channel = api.jane_channel(smtp.port, certs=certs, max_connections=4)
        api.world.send()
        now = time.time()
        dispatcher = api.world.services.dispatcher
        assert await dispatcher.run_once(SteppingClock(now)) == 1  # the 421
        gauge = "mailvia_channel_concurrency"
        assert value(await scrape(api), gauge, channel=channel.id) == 2.0
        # A connection back per minute without another 421 (domain/concurrency.py): full again.
        assert await dispatcher.run_once(SteppingClock(now + 400)) == 1
        assert value(await scrape(api), gauge, channel=channel.id) == 4.0
