"""What one API request may carry (API_BATCH_MAX_MESSAGES, API_REQUEST_MAX_RECIPIENTS: 413)
and the recipients an API token may submit (API_RECIPIENT_LIMIT: 429 with Retry-After), in
process over the real app and SQLite store, with small limits and a fake clock. Nothing is
stored for a refused request; other tokens keep their own limit; time gives it back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import Api, assert_problem, message, raw_message
from support.world import World


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Api]:
    world = World(
        tmp_path / "data",
        api_recipient_limit="12/60",
        api_batch_max_messages="3",
        api_request_max_recipients="8",
    )
    api = Api(world, clock=clock)
    api.jane_channel()
    api.team_channel()
    yield api
    await api.aclose()


def to(count: int, tag: str = "r") -> list[str]:
    return [f"{tag}{i}@example.com" for i in range(count)]


async def stored(api: Api) -> int:
    listed = await api.client("boss").get("/v1/messages", params={"limit": 200})
    return len(listed.json()["data"])


async def batch(client: httpx.AsyncClient, *messages: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/messages/batch", json={"messages": list(messages)})


async def test_a_request_over_its_caps_is_413_and_stores_nothing(api: Api) -> None:
    jane = api.client("jane")
    over = await batch(jane, *[message()] * 4)
    assert_problem(over, 413, "at most 3 messages")
    over = await batch(jane, message(to=to(5)), message(to=to(3), cc=to(1, "c")))
    assert_problem(over, 413, "at most 8 recipients")
    envelope = {"mail_from": "jane@acme.test", "rcpt_to": to(9)}
    raw = raw_message(b"From: jane@acme.test\r\n\r\nhi\r\n", envelope=envelope)
    assert_problem(await batch(jane, raw), 413, "at most 8 recipients")
    headers = ("To: " + ", ".join(to(9)) + "\r\n").encode()
    raw = raw_message(b"From: jane@acme.test\r\n" + headers + b"\r\nhi\r\n")
    assert_problem(await batch(jane, raw), 413, "at most 8 recipients")  # named in its header
    assert await stored(api) == 0
    allowed = await batch(jane, message(to=to(5)), message(to=to(3)))
    assert [r["status"] for r in allowed.json()["data"]] == [202, 202]


async def test_recipients_count_against_the_tokens_limit_until_time_gives_them_back(
    api: Api, clock: FakeClock
) -> None:
    jane = api.client("jane")
    assert (await jane.post("/v1/messages", json=message(to=to(7)))).status_code == 202
    assert (await batch(jane, message(to=to(4)))).status_code == 200  # 11 of 12
    refused = await batch(jane, message(to=to(3)))  # 2 short: 2 / (12 / 60 s) = 10 s
    assert_problem(refused, 429, "too many recipients for this API token", "at most 12 per 60 s")
    assert refused.headers["Retry-After"] == "10"
    assert_problem(await jane.post("/v1/messages", json=message(to=to(2))), 429)
    joe = api.client("joe")  # another token of the same organization: its own limit
    body = message(**{"from": "joe@acme.test"}, to=to(8))
    assert (await joe.post("/v1/messages", json=body)).status_code == 202
    assert await stored(api) == 3
    clock.now += 10
    assert (await batch(jane, message(to=to(3)))).status_code == 200
    assert await stored(api) == 4


async def test_more_recipients_than_the_limit_ever_allows_is_413(api: Api) -> None:
    jane = api.client("jane")
    big = message(to=to(7), cc=to(6, "c"))  # one message of 13: the limit allows 12
    assert_problem(await jane.post("/v1/messages", json=big), 413, "at most 12 per 60 s")
    assert await stored(api) == 0


async def test_the_limits_are_in_the_openapi_document(api: Api) -> None:
    document = (await api.client().get("/openapi.json")).json()
    batch_op = document["paths"]["/v1/messages/batch"]["post"]
    assert "3 messages" in batch_op["description"] and "8 recipients" in batch_op["description"]
    assert "12 recipients per 60 s" in batch_op["description"]
    assert {"413", "429"} <= set(batch_op["responses"])
    body = batch_op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BatchIn"}
    assert "MessageIn" in document["components"]["schemas"]
    single = document["paths"]["/v1/messages"]["post"]
    assert "12 recipients per 60 s" in single["description"]


async def test_a_body_declared_as_something_else_than_json_is_refused(api: Api) -> None:
    response = await api.client("jane").post(
        "/v1/messages", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415, "application/json", "text/plain")
    malformed = await api.client("jane").post(
        "/v1/messages/batch", content=b'{"messages": [{"from": ', headers={}
    )
    assert_problem(malformed, 400, "JSON")


@pytest.mark.parametrize(
    "value",
    [b"1" * 5000, b"[" * 5000 + b"]" * 5000],
    ids=["a number of 5,000 digits", "arrays nested 5,000 deep"],
)
async def test_json_the_decoder_will_not_read_is_a_400_not_a_500(api: Api, value: bytes) -> None:
    # the standard library refuses both with ValueError and RecursionError, not JSONDecodeError
    body = b'{"messages": [{"from": "jane@example.com", "to": ' + value + b"}]}"
    jane = api.client("jane")
    for path in ("/v1/messages/batch", "/v1/messages"):
        raw = body if path.endswith("batch") else b'{"subject": ' + value + b"}"
        response = await jane.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), (path, response.status_code, response.text)
    batch = await jane.post(
        "/v1/messages/batch", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(batch, 400, "JSON")
    assert await stored(api) == 0


def test_bad_limits_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    from mailvia.domain.errors import InvalidInput

    with pytest.raises(InvalidInput, match="API_BATCH_MAX_MESSAGES"):
        World(tmp_path / "data", api_batch_max_messages="0")
    with pytest.raises(InvalidInput, match="API_RECIPIENT_LIMIT"):
        World(tmp_path / "data", api_recipient_limit="lots")
