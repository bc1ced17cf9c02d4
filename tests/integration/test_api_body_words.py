"""A body's errors are told in the API's words, JSON's, whichever route reads it: never a
model's class name (`BatchIn`), nor Python's `dictionary` and `list`, in over the real app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.api import Api, assert_problem, message
from support.world import World


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data"))
    yield api
    await api.aclose()


@pytest.mark.parametrize(
    ("body", "loc", "said"),
    [
        (b"[]", "body", "Input should be an object"),
        (b'"x"', "body", "Input should be an object"),
        (b"5", "body", "Input should be an object"),
        (b'{"messages": 5}', "body.messages", "Input should be a valid array"),
        (b'{"messages": [5]}', "body.messages.0", "Input should be an object"),
    ],
)
async def test_a_batch_that_is_not_the_documented_shape_says_so_in_json_words(
    api: Api, body: bytes, loc: str, said: str
) -> None:
    response = await api.client("jane").post(
        "/v1/messages/batch", content=body, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, said)
    assert problem["errors"] == [{"loc": loc, "message": said}], problem


async def test_a_batchs_message_is_told_as_the_single_post_tells_it(api: Api) -> None:
    wrong = message(to="bob@example.com", headers=["X-A"], envelope=5)
    single = await api.client("jane").post("/v1/messages", json=wrong)
    batch = await api.client("jane").post("/v1/messages/batch", json={"messages": [wrong]})
    singly = assert_problem(single, 422)["errors"]
    batched = assert_problem(batch, 422)["errors"]
    expected = [{**e, "loc": e["loc"].replace("body", "body.messages.0", 1)} for e in singly]
    assert sorted(batched, key=str) == sorted(expected, key=str)
    assert not any(re.search(r"[a-z]In\b|dictionary", e["message"]) for e in batched), batched


async def test_a_body_of_another_route_that_is_not_an_object_says_so(api: Api) -> None:
    response = await api.client("jane").post("/v1/webhooks", json=[])
    assert assert_problem(response, 422)["errors"] == [
        {"loc": "body", "message": "Input should be an object"}
    ]
