"""A large batch whose body arrives in chunks (ingress/api/arriving.py, intake_route.py's
`_receive`): its raw messages are composed while it arrives and those results are used, and
every answer is the one FastAPI's own handling of the same endpoint gives for the same body
sent whole: valid batches, refusals per message (bad base64, another's envelope sender, a
message too large), refusals of the whole (a schema error late in the batch, over a cap,
over the token's recipient limit), and a body over the limit while it arrives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from mailvia.ingress.api.arriving import Arriving
from mailvia.ingress.api.intake_route import IntakeRoute
from support.api import Api, raw_message
from support.world import World

PAD = b"x" * 3000
JANE = {"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}


def raw(n: int, **fields: Any) -> dict[str, Any]:
    content = f"From: jane@acme.test\r\nTo: bob@example.com\r\nSubject: {n}\r\n\r\n".encode()
    return raw_message(content + PAD, **{"envelope": JANE, **fields})


def body(*messages: dict[str, Any]) -> bytes:
    return json.dumps({"messages": list(messages)}).encode()


VALID = body(*[raw(n) for n in range(80)])
CASES = {
    "valid": VALID,
    "per-message-refusals": body(
        *[raw(n) for n in range(30)],
        {"raw": "!!" + raw(30)["raw"], "envelope": JANE},
        raw(31, envelope={"mail_from": "joe@acme.test", "rcpt_to": ["bob@example.com"]}),
        {"from": "jane@acme.test", "to": ["bob@example.com"], "text": "fields"},
        *[raw(n) for n in range(34, 60)],
    ),
    "no-envelope": body(*[{"raw": raw(n)["raw"]} for n in range(60)]),
    "schema-error-late": body(*[raw(n) for n in range(50)], {"raw": 3}, raw(51)),
    "over-the-message-cap": body(*[raw(n) for n in range(121)]),
    "over-the-recipient-limit": body(
        *[raw(n, envelope={**JANE, "rcpt_to": ["a@example.com"] * 9}) for n in range(60)]
    ),
    "duplicate-messages": VALID[:-1] + b', "messages": []}',
}


def _world(path: Path) -> World:
    return World(
        path,
        api_recipient_limit="500/60",
        api_batch_max_messages="120",
        api_request_max_recipients="1000",
    )


@pytest.fixture
async def apis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Api, Api]]:
    """The app, and the same app whose submit routes FastAPI handles itself."""
    ours = Api(_world(tmp_path / "ours"))
    await _route_each(ours)
    with monkeypatch.context() as patch:
        patch.setattr(IntakeRoute, "get_route_handler", APIRoute.get_route_handler)
        fastapis = Api(_world(tmp_path / "fastapi"))
        await _route_each(fastapis)
    for api in (ours, fastapis):
        api.jane_channel()
    yield ours, fastapis
    await ours.aclose()
    await fastapis.aclose()


async def _route_each(api: Api) -> None:
    assert (await api.client().post("/v1/messages/batch", json={})).status_code == 401


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each `Arriving.take` gave back a message composed ahead."""
    given: list[bool] = []
    take = Arriving.take

    def counted(self: Arriving, index: int, message: Any) -> Any:
        try:
            made = take(self, index, message)
        except Exception:
            given.append(True)
            raise
        given.append(made is not None)
        return made

    monkeypatch.setattr(Arriving, "take", counted)
    return given


async def post_in_chunks(
    api: Api, data: bytes, *, chunk: int = 16 * 1024, declared: bool = True
) -> Any:
    """POST the batch to the app as a client on a slow link would: in chunks, the event
    loop turning between them. The answer as a client sees it, ids and times left out."""
    chunks = [data[at : at + chunk] for at in range(0, len(data), chunk)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.002)
        if not chunks:
            return {"type": "http.disconnect"}
        piece = chunks.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"api.test"),
        (b"authorization", f"Bearer {api.tokens['jane']}".encode()),
        (b"content-type", b"application/json"),
    ]
    if declared:
        headers.append((b"content-length", str(len(data)).encode()))
    await asyncio.wait_for(api.app(_scope("/v1/messages/batch", headers), receive, send), 60)
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], _shape(json.loads(answer))


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("id", "expected_at")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


async def post_whole(api: Api, data: bytes) -> Any:
    answer = await api.client("jane").post(
        "/v1/messages/batch", content=data, headers={"Content-Type": "application/json"}
    )
    return answer.status_code, _shape(answer.json())


@pytest.mark.parametrize("case", list(CASES))
async def test_every_answer_is_fastapis_own(
    apis: tuple[Api, Api], taken: list[bool], case: str
) -> None:
    ours, fastapis = apis
    mine = await post_in_chunks(ours, CASES[case])
    theirs = await post_whole(fastapis, CASES[case])
    assert mine == theirs
    if case in ("valid", "per-message-refusals", "no-envelope"):
        assert mine[0] == 200
        count = len(json.loads(CASES[case])["messages"])
        assert len(taken) == count and sum(taken) >= count // 2, taken  # most composed ahead
    else:
        assert mine[0] in (409, 413, 422, 429) and not any(taken)


async def test_what_is_stored_is_what_the_whole_reading_stores(
    apis: tuple[Api, Api], taken: list[bool]
) -> None:
    ours, fastapis = apis
    status, _ = await post_in_chunks(ours, VALID)
    assert status == 200 and len(taken) == 80 and all(taken[:40])
    assert (await post_whole(fastapis, VALID))[0] == 200
    assert await stored(ours) == await stored(fastapis) == sorted(str(n) for n in range(80))


async def stored(api: Api) -> list[str]:
    """The subjects of the messages stored."""
    listed = await api.client("jane").get("/v1/messages", params={"limit": 200})
    ids = [m["id"] for m in listed.json()["data"]]
    subjects = [api.world.store.get_message(i).subject for i in ids]
    return sorted(subjects)


async def test_a_body_over_the_limit_while_it_arrives_is_413(
    tmp_path: Path, taken: list[bool]
) -> None:
    api = Api(_world(tmp_path / "data"), max_message_size=20_000)  # a body limit of ~92 KB
    try:
        api.jane_channel()
        data = body(*[raw(n) for n in range(40)])
        status, answer = await post_in_chunks(api, data, declared=False)
        assert status == 413 and "limit" in answer["detail"]
        assert not taken
    finally:
        await api.aclose()


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("api.test", 80),
        "client": ("127.0.0.1", 1),
        "headers": headers,
    }
