"""The submit routes' direct path (ingress/api/direct.py): `POST /v1/messages` and
`/v1/messages/batch` reach their handler without FastAPI's router and its middleware stack,
and answer every request as that stack does: the body limit's 413 (declared, or found while
the body arrives), the problem+json errors, the 500 of a bug (logged, raised on to the
server), the rejection count; any other request goes the app's way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailvia.ingress.api import submit
from support.api import Api, answer_seen, message, raw_message
from support.world import World

TOKEN = "metrics-operator-token"
MAX_MESSAGE = 10_000  # the body limit: 1.4 x this + 64 KiB


@pytest.fixture
async def apis(tmp_path: Path) -> AsyncIterator[tuple[Api, Api]]:
    """The app as it is, and the same app with the direct path off."""
    made = []
    for name in ("direct", "stack"):
        world = World(tmp_path / name, metrics_token=TOKEN)
        api = Api(world, max_message_size=MAX_MESSAGE)
        api.jane_channel()
        made.append(api)
    made[1].app.direct_intake = None
    yield made[0], made[1]
    for api in made:
        await api.aclose()


def _stack_calls(api: Api) -> list[str]:
    """The requests that went through the app's middleware stack (and so its router)."""
    calls: list[str] = []
    app = api.app
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    inner = app.middleware_stack

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(f"{scope.get('method')} {scope.get('path')}")
        await inner(scope, receive, send)

    app.middleware_stack = counted
    return calls


async def test_the_submit_routes_skip_the_router_and_nothing_else_does(
    apis: tuple[Api, Api],
) -> None:
    direct, _ = apis
    calls = _stack_calls(direct)
    jane = direct.client("jane")
    assert (await jane.post("/v1/messages", json=message())).status_code == 202
    batch = {"messages": [message(), message(to=["nope"])]}
    assert (await jane.post("/v1/messages/batch", json=batch)).status_code == 200
    assert (await jane.post("/v1/messages?x=1", json=message())).status_code == 422
    assert calls == []
    assert (await jane.get("/v1/messages")).status_code == 200
    assert (await jane.post("/v1/messages/", json=message())).status_code in (307, 404, 405)
    assert (await jane.put("/v1/messages", json=message())).status_code == 405
    assert calls == ["GET /v1/messages", "POST /v1/messages/", "PUT /v1/messages"]


async def test_a_root_path_goes_the_apps_way(apis: tuple[Api, Api]) -> None:
    direct, _ = apis
    calls = _stack_calls(direct)
    jane = direct.client("jane", root_path="/mail")
    await jane.post("/mail/v1/messages", json=message())
    assert calls == ["POST /mail/v1/messages"]


def _chunks(body: bytes, size: int = 4096) -> Callable[[], AsyncIterator[bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        for at in range(0, len(body), size):
            yield body[at : at + size]

    return stream


BIG = json.dumps(raw_message(b"x" * 60_000)).encode()  # over the body limit (~78 KB)
# (path, headers, body, streamed: sent without a Content-Length)
REQUESTS: list[tuple[str, dict[str, str], bytes, bool]] = [
    ("/v1/messages", {}, json.dumps(message()).encode(), False),
    ("/v1/messages", {}, BIG, False),
    ("/v1/messages", {}, BIG, True),
    ("/v1/messages", {}, json.dumps(message()).encode(), True),
    ("/v1/messages", {"Content-Type": "text/plain"}, b"{}", False),
    ("/v1/messages", {}, b'{"from": ', False),
    ("/v1/messages", {}, json.dumps(message(to=["not an address"])).encode(), False),
    ("/v1/messages", {}, json.dumps(message(**{"from": "eve@evil.test"})).encode(), False),
    ("/v1/messages?stat=queued", {}, json.dumps(message()).encode(), False),
    ("/v1/messages", {"Idempotency-Key": "has space"}, json.dumps(message()).encode(), False),
    ("/v1/messages/batch", {}, json.dumps({"messages": [message()] * 3}).encode(), False),
    ("/v1/messages/batch", {}, json.dumps({"messages": [json.loads(BIG)]}).encode(), True),
    ("/v1/messages/batch", {}, json.dumps({"messages": [json.loads(BIG)]}).encode(), False),
    ("/v1/messages/batch", {}, b'{"messages": [1]}', False),
    ("/v1/messages/batch", {}, json.dumps({"messages": [message()] * 101}).encode(), False),
]


async def _post(
    api: Api, who: str | None, path: str, headers: dict[str, str], body: bytes, streamed: bool
) -> tuple[int, dict[str, str], Any]:
    client = api.client(who)
    sent = {"Content-Type": "application/json", **headers}
    content: Any = _chunks(body)() if streamed else body
    return answer_seen(await client.post(path, content=content, headers=sent))


async def test_every_answer_and_count_is_the_stacks_own(apis: tuple[Api, Api]) -> None:
    direct, stack = apis
    statuses = []
    for path, headers, body, streamed in REQUESTS:
        for who in ("jane", None):
            mine = await _post(direct, who, path, headers, body, streamed)
            theirs = await _post(stack, who, path, headers, body, streamed)
            assert mine == theirs, (path, headers, body[:60], streamed, who)
            statuses.append(mine[0])
    assert {200, 202, 400, 401, 403, 413, 415, 422} <= set(statuses), statuses
    assert statuses.count(413) >= 4  # declared and streamed, single and batch
    counts = [await _scrape(api, "mailvia_intake_rejections_total") for api in (direct, stack)]
    assert counts[0] == counts[1] and counts[0], counts


async def _scrape(api: Api, name: str) -> list[str]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    text = (await api.client().get("/metrics", headers=auth)).text
    return sorted(line for line in text.splitlines() if line.startswith(name))


async def test_a_bug_is_a_logged_500_raised_on_to_the_server(
    apis: tuple[Api, Api], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(submit, "receipt_payload", broken)
    answers = []
    for api in apis:
        caplog.clear()
        client = api.client("jane", raise_app_exceptions=False)
        response = await client.post("/v1/messages", json=message())
        answers.append(
            (answer_seen(response), "unhandled error on POST /v1/messages" in caplog.text)
        )
        with pytest.raises(RuntimeError, match="a bug"):
            await api.client("jane").post("/v1/messages", json=message())
    assert answers[0] == answers[1]
    assert answers[0][0][0] == 500 and answers[0][1]
