"""A batch larger than one read, arriving in parts (ingress/api/bodies.py `receive_body`):
taken whole, with or without a Content-Length, and refused with 413 once it passes the body
limit while it arrives; nothing stored for a refused one."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailvia.ingress.api.intake_route import SMALL_BODY
from mailvia.ingress.api.limits import body_limit
from mailvia.ingress.api.schemas import MessageIn
from support.api import Api, assert_problem, message, open_api

MAX_MESSAGE = 50_000


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data", max_message_size=MAX_MESSAGE) as api:
        api.jane_channel()
        yield api


def _parts(body: bytes, size: int = 7_000) -> AsyncIterator[bytes]:
    async def parts() -> AsyncIterator[bytes]:
        for at in range(0, len(body), size):
            yield body[at : at + size]

    return parts()


async def _stored(api: Api) -> int:
    response = await api.client("boss").get("/v1/messages", params={"limit": 200})
    return len(response.json()["data"])


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_batch_in_parts_is_taken_whole(api: Api, declared: bool) -> None:
    batch = [message(subject=f"m{k}", text="x" * 9_000) for k in range(9)]
    body = json.dumps({"messages": batch}).encode()
    assert SMALL_BODY < len(body) < body_limit(MAX_MESSAGE)
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(len(body))
    jane = api.client("jane")
    response = await jane.post("/v1/messages/batch", content=_parts(body), headers=headers)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["data"]] == [202] * 9
    assert await _stored(api) == 9


async def test_a_batch_in_parts_over_the_body_limit_is_413(api: Api) -> None:
    batch = [message(subject=f"m{k}", text="x" * 40_000) for k in range(4)]
    body = json.dumps({"messages": batch}).encode()
    assert len(body) > body_limit(MAX_MESSAGE)
    jane = api.client("jane")
    headers = {"Content-Type": "application/json"}
    response = await jane.post("/v1/messages/batch", content=_parts(body), headers=headers)
    assert_problem(response, 413, "over the limit")
    assert await _stored(api) == 0


async def test_a_batchs_message_models_are_freed_before_its_commit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer objects for serve's collector to walk while it commits and answers
    (docs/benchmarks.md, branch `batch3`): none of the batch's MessageIn is alive then."""
    submitter = api.world.services.submitter
    submit_each = submitter.submit_each
    alive: list[int] = []

    def counted(items: Any, *, now: float, **options: Any) -> Any:
        alive.append(_models())
        return submit_each(items, now=now, **options)

    monkeypatch.setattr(submitter, "submit_each", counted)
    before = _models()
    batch = [message(subject=f"m{k}") for k in range(3)]
    response = await api.client("jane").post("/v1/messages/batch", json={"messages": batch})
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["data"]] == [202] * 3
    assert alive == [before]


def _models() -> int:
    """The MessageIn objects still held (garbage in cycles, an earlier test's, collected
    first: it would be counted in one count and not the other)."""
    gc.collect()
    return sum(isinstance(found, MessageIn) for found in gc.get_objects())
