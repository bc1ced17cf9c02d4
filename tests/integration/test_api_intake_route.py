"""The submit routes' own handler (ingress/api/intake_route.py) answers every request as
FastAPI's dependency solving of the same endpoints does, in the same order of checks (query,
token, headers, Content-Type, body), and runs a small body's work in one worker-thread call
(a large one's after the token, as before)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from mailvia.ingress.api import intake_route
from mailvia.ingress.api.intake_route import SMALL_BODY, IntakeRoute
from support.api import Api, answer_seen, message
from support.world import World

BIG_TEXT = "x" * (SMALL_BODY + 1000)

# (path, query, headers, body): each sent with jane's token, a wrong one, and none.
CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("/v1/messages", "", {}, json.dumps(message()).encode()),
    ("/v1/messages", "", {}, json.dumps(message(text=BIG_TEXT)).encode()),
    ("/v1/messages", "?stat=queued", {}, json.dumps(message()).encode()),
    ("/v1/messages", "", {"Idempotency-Key": "k1"}, json.dumps(message()).encode()),
    ("/v1/messages", "", {"Idempotency-Key": "k1"}, json.dumps(message(subject="x")).encode()),
    ("/v1/messages", "", {"Idempotency-Key": "has space"}, json.dumps(message()).encode()),
    ("/v1/messages", "", {"Content-Type": "text/plain"}, json.dumps(message()).encode()),
    ("/v1/messages", "", {}, b'{"from": '),
    ("/v1/messages", "", {}, json.dumps(message(to="bob@example.com")).encode()),
    ("/v1/messages", "", {}, json.dumps(message(**{"from": "eve@evil.test"})).encode()),
    ("/v1/messages", "", {}, b"{" + b" " * (SMALL_BODY + 10) + b"}"),
    ("/v1/messages/batch", "", {}, json.dumps({"messages": [message(), message()]}).encode()),
    ("/v1/messages/batch", "?x=1", {}, json.dumps({"messages": [message()]}).encode()),
    ("/v1/messages/batch", "", {"Idempotency-Key": "b1"}, json.dumps({"messages": []}).encode()),
    ("/v1/messages/batch", "", {"Idempotency-Key": "x" * 256}, b'{"messages": []}'),
    ("/v1/messages/batch", "", {"Content-Type": "text/csv"}, b'{"messages": []}'),
    ("/v1/messages/batch", "", {}, b'{"messages": [1, {"to": 3}]}'),
    ("/v1/messages/batch", "", {}, json.dumps({"messages": [message()] * 101}).encode()),
    (
        "/v1/messages/batch",
        "",
        {},
        json.dumps({"messages": [message(text=BIG_TEXT), message(to=["x"])]}).encode(),
    ),
]


@pytest.fixture
async def apis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Api, Api]]:
    """The app as it is, and the same app whose submit routes FastAPI reaches and handles
    itself (its router and its whole middleware stack; an app makes its routes' handlers
    when it first routes a request: each is sent one)."""
    ours = Api(World(tmp_path / "ours"))
    await _route_each(ours)
    with monkeypatch.context() as patch:
        patch.setattr(IntakeRoute, "get_route_handler", APIRoute.get_route_handler)
        fastapis = Api(World(tmp_path / "fastapi"))
        fastapis.app.direct_intake = None  # FastAPI's router and middleware stack too
        await _route_each(fastapis)
    yield ours, fastapis
    await ours.aclose()
    await fastapis.aclose()


async def _route_each(api: Api) -> None:
    for path in ("/v1/messages", "/v1/messages/batch"):
        assert (await api.client().post(path, json={})).status_code == 401


async def _send(api: Api, token: str | None, case: tuple[str, str, dict[str, str], bytes]) -> Any:
    path, query, headers, body = case
    client = api.client()
    sent = {"Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return answer_seen(await client.post(path + query, content=body, headers=sent))


async def test_every_answer_is_fastapis_own(apis: tuple[Api, Api]) -> None:
    ours, fastapis = apis
    ours.jane_channel()
    fastapis.jane_channel()
    for case in CASES:
        for who in ("jane", "wrong", None):
            mine = await _send(ours, _token(ours, who), case)
            theirs = await _send(fastapis, _token(fastapis, who), case)
            assert mine == theirs, (case[0], case[1], case[2], case[3][:80], who)


def _token(api: Api, who: str | None) -> str | None:
    return api.tokens.get(who or "", who)


async def test_the_openapi_document_is_the_endpoints_own(apis: tuple[Api, Api]) -> None:
    ours, fastapis = apis
    assert ours.app.openapi() == fastapis.app.openapi()


def _count_thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    run = intake_route.in_thread

    async def counted(func: Callable[..., Any], *args: Any) -> Any:
        calls.append(getattr(func, "__name__", repr(func)))
        return await run(func, *args)

    monkeypatch.setattr(intake_route, "in_thread", counted)
    return calls


async def test_a_small_body_takes_one_thread_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(World(tmp_path / "data"))
    try:
        api.jane_channel()
        calls = _count_thread_calls(monkeypatch)
        jane = api.client("jane")
        assert (await jane.post("/v1/messages", json=message())).status_code == 202
        assert calls == ["_whole"]
        calls.clear()
        big = await jane.post("/v1/messages", json=message(text=BIG_TEXT))
        assert big.status_code == 202, big.text
        assert calls == ["caller", "_one"]
    finally:
        await api.aclose()


@pytest.mark.parametrize(
    "declared",
    [
        [(b"content-length", str(SMALL_BODY * 2).encode())],
        [(b"content-length", b"2000"), (b"expect", b"100-continue")],
    ],
    ids=["large", "small-expecting-100-continue"],
)
async def test_a_body_held_back_is_not_read_before_the_token_is_accepted(
    tmp_path: Path, declared: list[tuple[bytes, bytes]]
) -> None:
    """A large body, or one whose client waits for 100 Continue (sent when the app first
    reads): a wrong token gets its 401 without the body asked for."""
    api = Api(World(tmp_path / "data"))
    try:
        assert await _post_held(api, "wrong", declared) == (401, False)
        status, read = await _post_held(api, api.tokens["jane"], declared)
        assert status != 401 and read
    finally:
        await api.aclose()


async def _post_held(api: Api, token: str, declared: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """POST /v1/messages with the `declared` headers: the status, and whether the app
    asked for the body."""
    received: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("body")
        body = json.dumps(message(text=BIG_TEXT)).encode()
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(item: dict[str, Any]) -> None:
        sent.append(item)

    headers = [
        (b"host", b"api.test"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        *declared,
    ]
    await asyncio.wait_for(api.app(_scope("/v1/messages", headers), receive, send), 30)
    return sent[0]["status"], bool(received)


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
