"""The API's rate limit per API token (API_RATE_LIMIT): over it a token gets 429 with
Retry-After while other tokens are served; time (a fake clock) gives requests back; `off`
never limits; every operation that takes a token documents the 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.errors import InvalidInput
from support.api import Api, assert_problem, message
from support.world import World

METRICS_TOKEN = "metrics-token-for-tests"


class FakeClock:
    """The rate limit's clock: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    world = World(tmp_path / "data", api_rate_limit="3/60", metrics_token=METRICS_TOKEN)
    api = Api(world, clock=clock)
    yield api
    await api.aclose()


async def test_a_token_over_the_limit_gets_429_until_time_gives_a_request_back(
    api: Api, clock: FakeClock
) -> None:
    jane = api.client("jane")
    for _ in range(3):
        assert (await jane.get("/v1/organization")).status_code == 200
    refused = await jane.get("/v1/organization")
    assert_problem(refused, 429, "too many requests for this API token", "at most 3 per 60 s")
    assert refused.headers["Retry-After"] == "20"
    assert "retry after 20 s" in refused.json()["detail"]
    clock.now += 19.5
    assert int((await jane.get("/v1/organization")).headers["Retry-After"]) == 1
    clock.now += 0.5
    assert (await jane.get("/v1/organization")).status_code == 200
    assert_problem(await jane.get("/v1/organization"), 429)
    clock.now += 60
    for _ in range(3):
        assert (await jane.get("/v1/organization")).status_code == 200


async def test_other_tokens_are_served_and_bad_tokens_are_still_401(api: Api) -> None:
    jane = api.client("jane")
    for _ in range(4):
        await jane.get("/v1/channels")
    assert_problem(await jane.get("/v1/channels"), 429)
    # joe is in jane's organization: his token has its own count.
    assert (await api.client("joe").get("/v1/channels")).status_code == 200
    # Requests without a (good) token are refused as before, and count for no one.
    assert_problem(await api.client().get("/v1/channels"), 401)
    bad = {"Authorization": "Bearer not-a-token"}
    assert_problem(await api.client().get("/v1/channels", headers=bad), 401)
    assert (await api.client().get("/healthz")).status_code == 200


async def test_a_refused_submission_is_counted_as_rate_limited(api: Api) -> None:
    api.jane_channel()
    jane = api.client("jane")
    for _ in range(3):
        assert (await jane.post("/v1/messages", json=message())).status_code == 202
    assert_problem(await jane.post("/v1/messages", json=message()), 429)
    metrics = await api.client().get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    line = 'mailvia_intake_rejections_total{intake="api",reason="rate_limited"} 1.0'
    assert line in metrics.text.splitlines()


async def test_off_never_limits(tmp_path: Path, clock: FakeClock) -> None:
    api = Api(World(tmp_path / "data", api_rate_limit="off"), clock=clock)
    try:
        jane = api.client("jane")
        # One more than the default allows at once.
        statuses = {(await jane.get("/v1/presets")).status_code for _ in range(601)}
        assert statuses == {200}
    finally:
        await api.aclose()


def test_a_bad_setting_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"setting API_RATE_LIMIT: '3 a minute'.*COUNT/SEC"):
        World(tmp_path / "data", api_rate_limit="3 a minute")


async def test_every_operation_that_takes_a_token_documents_429(api: Api) -> None:
    paths = (await api.client().get("/openapi.json")).json()["paths"]
    operations = [op for item in paths.values() for op in item.values()]
    with_token = [op for op in operations if "401" in op["responses"]]
    assert len(with_token) == len(operations) - 1  # all but /healthz
    for op in with_token:
        too_many = op["responses"].get("429")
        assert too_many is not None, op["operationId"]
        assert "Retry-After" in too_many["headers"], op["operationId"]
