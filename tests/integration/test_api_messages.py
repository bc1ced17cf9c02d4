"""Messages over the HTTP API: the real app and SQLite store, in process over ASGI.

Submitting, reading, listing with a cursor, cancelling, batches, idempotency, and the door's
checks (tokens, sender rights, line breaks, unknown fields, sizes)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mailvia.ingress.api.schemas import BatchIn
from support.api import PROBLEM_JSON, Api, assert_problem, message, open_api, raw_message


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data", max_message_size=50_000) as api:
        api.jane_channel()
        yield api


async def stored(api: Api) -> list[dict[str, Any]]:
    response = await api.client("boss").get("/v1/messages", params={"limit": 200})
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_no_token_or_a_bad_one_is_401_with_a_bearer_challenge(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer mv_not-a-token"}, {"Authorization": "Basic x"}):
        response = await api.client().get("/v1/messages", headers=headers)
        assert_problem(response, 401, "token")
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = await api.client().post("/v1/messages", json=message())
    assert_problem(response, 401)
    assert await stored(api) == []


async def test_a_message_sent_appears_in_the_list_and_on_its_own(api: Api) -> None:
    jane = api.client("jane")
    response = await jane.post("/v1/messages", json=message(cc=["carol@example.net"]))
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["state"] == "queued"
    assert receipt["channel"]["name"] == "jane-box"
    assert receipt["envelope"] == {
        "mail_from": "jane@acme.test",
        "rcpt_to": ["bob@example.com", "carol@example.net"],
    }
    assert receipt["forecast"]["expected_at"] and receipt["warnings"] == []

    listed = (await jane.get("/v1/messages")).json()
    assert [m["id"] for m in listed["data"]] == [receipt["id"]]
    assert listed["next_cursor"] is None

    one = (await jane.get(f"/v1/messages/{receipt['id']}")).json()
    assert one["state"] == "queued" and one["possible_duplicate"] is False
    assert [(r["address"], r["state"]) for r in one["recipients"]] == [
        ("bob@example.com", "queued"),
        ("carol@example.net", "queued"),
    ]
    assert one["attempts"] == []
    assert_problem(await jane.get("/v1/messages/msg_nope"), 404, "msg_nope")


async def test_from_an_address_that_is_not_the_callers_is_403(api: Api) -> None:
    jane = api.client("jane")
    for sender in ("boss@acme.test", "Ann <ann@globex.test>", "jane@elsewhere.test"):
        response = await jane.post("/v1/messages", json=message(**{"from": sender}))
        assert_problem(response, 403)
    raw = b"From: boss@acme.test\r\nTo: bob@example.com\r\nSubject: x\r\n\r\nhi\r\n"
    assert_problem(await jane.post("/v1/messages", json=raw_message(raw)), 403)
    mine = b"From: jane@acme.test\r\nTo: bob@example.com\r\nSubject: x\r\n\r\nhi\r\n"
    envelope = {"mail_from": "boss@acme.test", "rcpt_to": ["bob@example.com"]}
    response = await jane.post("/v1/messages", json=raw_message(mine, envelope=envelope))
    assert_problem(response, 403, "envelope")
    assert await stored(api) == []


CRLF = "\r\nBcc: evil@example.org"
INJECTIONS = {
    "subject": message(subject="hi" + CRLF),
    "display name": message(**{"from": "Jane" + CRLF + " <jane@acme.test>"}),
    "to": message(to=["bob@example.com" + CRLF]),
    "header value": message(headers={"X-Campaign": "spring" + CRLF}),
    "header value LF": message(headers={"X-Campaign": "spring\nBcc: evil@example.org"}),
    "header name": message(headers={"X-A\r\nBcc": "evil@example.org"}),
    "NUL": message(subject="hi\0there"),
    "reply_to": message(reply_to="jane@acme.test\rBcc: evil@example.org"),
    "envelope mail_from": raw_message(
        b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\nhi\r\n",
        envelope={
            "mail_from": "jane@acme.test\r\nRCPT TO:<evil@example.org>",
            "rcpt_to": ["b@x.test"],
        },
    ),
    "envelope rcpt_to": raw_message(
        b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\nhi\r\n",
        envelope={"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com\r\nDATA"]},
    ),
}


async def test_line_breaks_and_nul_are_refused_and_nothing_is_stored(api: Api) -> None:
    jane = api.client("jane")
    for where, body in INJECTIONS.items():
        response = await jane.post("/v1/messages", json=body)
        assert response.status_code == 422, (where, response.text)
        assert_problem(response, 422)
        # In a batch: the item's problem, or the whole batch's when the schema refuses it.
        batch = await jane.post("/v1/messages/batch", json={"messages": [body]})
        status = (
            batch.json()["data"][0]["status"] if batch.status_code == 200 else batch.status_code
        )
        assert status == 422, (where, batch.text)
    assert await stored(api) == []


async def test_unknown_fields_and_wrong_types_are_422_and_bad_json_is_400(api: Api) -> None:
    jane = api.client("jane")
    body = assert_problem(await jane.post("/v1/messages", json=message(form="typo")), 422, "form")
    assert body["errors"][0]["loc"] == "body.form"
    assert_problem(await jane.post("/v1/messages", json=message(to="bob@example.com")), 422)
    assert_problem(await jane.post("/v1/messages", json=message(subject=5)), 422)
    bad = {"raw": "not base64!!"}
    assert_problem(await jane.post("/v1/messages", json=bad), 422, "base64")
    mixed = raw_message(b"From: jane@acme.test\r\n\r\nhi", subject="x")
    assert_problem(await jane.post("/v1/messages", json=mixed), 422, "raw")
    response = await jane.post(
        "/v1/messages", content=b'{"from": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "JSON")
    assert await stored(api) == []


async def test_a_password_sent_in_an_invalid_body_is_never_echoed(api: Api) -> None:
    response = await api.client("jane").post(
        "/v1/channels", json={"name": "x", "password": "hunter2", "port": "25"}
    )
    assert_problem(response, 422)
    assert "hunter2" not in response.text


async def test_oversize_messages_and_bodies_are_413(api: Api) -> None:
    jane = api.client("jane")
    big_text = "x" * 60_000  # over the 50,000-byte message limit, under the body limit
    assert_problem(await jane.post("/v1/messages", json=message(text=big_text)), 413, "limit")
    raw = b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\n" + b"y" * 60_000
    assert_problem(await jane.post("/v1/messages", json=raw_message(raw)), 413)
    huge = b'{"text": "' + b"z" * 200_000 + b'"}'  # over 50,000 * 1.4 + 64 KiB
    response = await jane.post(
        "/v1/messages", content=huge, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "body")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(20):
            yield b" " * 20_000

    response = await jane.post(
        "/v1/messages", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "body")
    assert await stored(api) == []


async def test_idempotency_key_replays_the_same_message_or_conflicts(api: Api) -> None:
    jane = api.client("jane")
    key = {"Idempotency-Key": "order-42"}
    first = await jane.post("/v1/messages", json=message(), headers=key)
    assert first.status_code == 202
    # Same body (defaults spelled out count as the same), same key: the same message.
    again = await jane.post("/v1/messages", json=message(cc=[], bcc=[]), headers=key)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await jane.post("/v1/messages", json=message(subject="changed"), headers=key)
    assert_problem(other, 409, "idempotency")
    # Keys are kept per user: joe's key of the same name is his own, and shows nothing of
    # jane's (neither her receipt nor a conflict).
    api.team_channel()
    joe = await api.client("joe").post(
        "/v1/messages", json=message(**{"from": "joe@acme.test"}), headers=key
    )
    assert joe.status_code == 202 and joe.json()["id"] != first.json()["id"]
    bad_key = await jane.post("/v1/messages", json=message(), headers={"Idempotency-Key": "a b"})
    assert_problem(bad_key, 422)
    assert len(await stored(api)) == 2


async def test_a_batch_of_three_with_one_bad_item(api: Api) -> None:
    jane = api.client("jane")
    batch = {
        "messages": [
            message(subject="one"),
            message(subject="two\r\nBcc: evil@example.org"),
            message(subject="three"),
        ]
    }
    response = await jane.post("/v1/messages/batch", json=batch)
    assert response.status_code == 200, response.text
    results = response.json()["data"]
    assert [r["status"] for r in results] == [202, 422, 202]
    assert results[1]["receipt"] is None and "line breaks" in results[1]["problem"]["detail"]
    ids = [results[0]["receipt"]["id"], results[2]["receipt"]["id"]]
    assert sorted(m["id"] for m in await stored(api)) == sorted(ids)

    forbidden = {"messages": [message(), message(**{"from": "boss@acme.test"})]}
    results = (await jane.post("/v1/messages/batch", json=forbidden)).json()["data"]
    assert [r["status"] for r in results] == [202, 403]


async def test_a_batch_with_an_idempotency_key_replays_as_a_whole(api: Api) -> None:
    jane = api.client("jane")
    key = {"Idempotency-Key": "batch-7"}
    batch = {"messages": [message(subject="a"), message(subject="b")]}
    first = (await jane.post("/v1/messages/batch", json=batch, headers=key)).json()["data"]
    again = (await jane.post("/v1/messages/batch", json=batch, headers=key)).json()["data"]
    assert [r["status"] for r in again] == [200, 200]
    assert [r["receipt"]["id"] for r in again] == [r["receipt"]["id"] for r in first]
    batch["messages"].append(message(subject="c"))
    assert_problem(await jane.post("/v1/messages/batch", json=batch, headers=key), 409)
    assert len(await stored(api)) == 2


async def test_a_batch_of_raw_messages_is_taken_with_or_without_an_idempotency_key(
    api: Api,
) -> None:
    """Raw messages only: read without their models (ingress/api/raw_batch.py) unless an
    Idempotency-Key needs them hashed; either way each message's envelope, a bad
    one's own problem, and a replay as a whole."""
    jane = api.client("jane")
    mine = b"From: jane@acme.test\r\nTo: bob@example.com, carol@example.com\r\n\r\nhi\r\n"
    envelope = {"mail_from": "jane@acme.test", "rcpt_to": ["dan@example.com"]}
    batch = {"messages": [raw_message(mine), raw_message(mine, envelope=envelope)]}
    results = (await jane.post("/v1/messages/batch", json=batch)).json()["data"]
    assert [r["status"] for r in results] == [202, 202]
    rcpt_to = [r["receipt"]["envelope"]["rcpt_to"] for r in results]
    assert rcpt_to == [["bob@example.com", "carol@example.com"], ["dan@example.com"]]
    forbidden = {"mail_from": "boss@acme.test", "rcpt_to": ["bob@example.com"]}
    bad = {"messages": [raw_message(mine, envelope=forbidden), raw_message(b"\r\n")]}
    results = (await jane.post("/v1/messages/batch", json=bad)).json()["data"]
    assert [r["status"] for r in results] == [403, 422]
    key = {"Idempotency-Key": "raw-batch-1"}
    first = (await jane.post("/v1/messages/batch", json=batch, headers=key)).json()["data"]
    again = (await jane.post("/v1/messages/batch", json=batch, headers=key)).json()["data"]
    assert [r["status"] for r in first] == [202, 202] and [r["status"] for r in again] == [200, 200]
    assert [r["receipt"]["id"] for r in again] == [r["receipt"]["id"] for r in first]
    batch["messages"].reverse()
    assert_problem(await jane.post("/v1/messages/batch", json=batch, headers=key), 409)
    assert len(await stored(api)) == 4


async def test_a_raw_batch_without_an_idempotency_key_builds_no_models(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route reads a batch of raw messages without a key by raw_batch.py, never by
    `BatchIn.model_validate` (~11 ms per 1,000 messages); with a key it needs the models."""
    calls: list[int] = []
    validate = BatchIn.model_validate.__func__  # type: ignore[attr-defined]

    def counted(cls: type[BatchIn], *args: Any, **kwargs: Any) -> BatchIn:
        calls.append(1)
        return validate(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(BatchIn, "model_validate", classmethod(counted))
    jane = api.client("jane")
    mine = b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\nhi\r\n"
    envelope = {"mail_from": "jane@acme.test", "rcpt_to": ["dan@example.com"]}
    batch = {"messages": [raw_message(mine), raw_message(mine, envelope=envelope)]}
    results = (await jane.post("/v1/messages/batch", json=batch)).json()["data"]
    assert [r["status"] for r in results] == [202, 202]
    assert calls == []
    key = {"Idempotency-Key": "raw-batch-models"}
    results = (await jane.post("/v1/messages/batch", json=batch, headers=key)).json()["data"]
    assert [r["status"] for r in results] == [202, 202]
    assert calls == [1]


async def test_batch_limits(api: Api) -> None:
    jane = api.client("jane")
    assert_problem(await jane.post("/v1/messages/batch", json={"messages": []}), 422)
    too_many = {"messages": [{"from": "jane@acme.test"}] * 1001}
    assert_problem(await jane.post("/v1/messages/batch", json=too_many), 413, "1000 messages")


async def test_cancel(api: Api) -> None:
    jane = api.client("jane")
    message_id = (await jane.post("/v1/messages", json=message())).json()["id"]
    response = await jane.post(f"/v1/messages/{message_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert {r["state"] for r in response.json()["recipients"]} == {"cancelled"}
    assert_problem(await jane.post(f"/v1/messages/{message_id}/cancel"), 409, "cancelled")
    assert_problem(await api.client("joe").post(f"/v1/messages/{message_id}/cancel"), 404)


async def test_pagination_with_a_cursor_newest_first(api: Api) -> None:
    jane = api.client("jane")
    sent = [
        (await jane.post("/v1/messages", json=message(subject=f"m{i}"))).json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await jane.get("/v1/messages", params=params)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))
    filtered = await jane.get("/v1/messages", params={"state": "queued", "channel": "jane-box"})
    assert len(filtered.json()["data"]) == 5
    assert_problem(await jane.get("/v1/messages", params={"cursor": "garbage"}), 400, "cursor")
    assert_problem(await jane.get("/v1/messages", params={"state": "lost"}), 422)
    assert_problem(await jane.get("/v1/messages", params={"limit": 0}), 422)


async def test_raw_message_with_and_without_envelope(api: Api) -> None:
    jane = api.client("jane")
    content = b"From: Jane <jane@acme.test>\nTo: bob@example.com\nBcc: hidden@example.org\n\nhi\n"
    receipt = (await jane.post("/v1/messages", json=raw_message(content))).json()
    assert receipt["envelope"]["rcpt_to"] == ["bob@example.com", "hidden@example.org"]
    envelope = {"mail_from": "jane@acme.test", "rcpt_to": ["only@example.com"]}
    response = await jane.post("/v1/messages", json=raw_message(content, envelope=envelope))
    assert response.status_code == 202
    assert response.json()["envelope"]["rcpt_to"] == ["only@example.com"]


async def test_malformed_headers_the_parser_trips_on_are_422(api: Api) -> None:
    content = b'From: Jane <jane@acme.test>\r\nTo: "\r\nSubject: x\r\n\r\nhi'
    response = await api.client("jane").post("/v1/messages", json=raw_message(content))
    assert_problem(response, 422)


async def test_route_explains_the_channel(api: Api) -> None:
    jane = api.client("jane")
    route = (await jane.get("/v1/route", params={"from": "jane@acme.test"})).json()
    assert route["channel"]["name"] == "jane-box" and route["held"] is False
    assert route["steps"] and route["reason"]
    assert_problem(await jane.get("/v1/route", params={"from": "not an address"}), 422)
    # another's address: refused as a message From it is, not explained as if it were hers
    refused = await jane.get("/v1/route", params={"from": "joe@acme.test"})
    sent = await jane.post("/v1/messages", json=message(**{"from": "joe@acme.test"}))
    assert assert_problem(refused, 403)["detail"] == assert_problem(sent, 403)["detail"]


async def test_an_unexpected_error_is_a_bare_500_problem(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    api.app.add_api_route("/boom", boom)
    response = await api.client(raise_app_exceptions=False).get("/boom")
    assert_problem(response, 500)
    assert "secret" not in response.text
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_unknown_query_parameters_are_422_and_wrong_methods_405(api: Api) -> None:
    jane = api.client("jane")
    assert_problem(await jane.get("/v1/messages", params={"stat": "queued"}), 422, "stat")
    response = await jane.put("/v1/messages")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, POST"


async def test_a_store_that_cannot_be_reached_is_503_without_internals(
    api: Api, tmp_path: Path
) -> None:
    data, away = tmp_path / "data", tmp_path / "away"
    api.world.store.close()  # type: ignore[attr-defined]  # SqlStore: reconnects
    data.rename(away)
    try:
        response = await api.client("jane").get("/v1/messages")
        body = assert_problem(response, 503, "try again")
        assert "sqlite" not in body["detail"].lower() and str(tmp_path) not in response.text
        assert response.headers["retry-after"]
        assert_problem(await api.client().get("/healthz"), 503)
    finally:
        api.world.store.close()  # type: ignore[attr-defined]
        away.rename(data)
    assert (await api.client().get("/healthz")).json()["status"] == "ok"


async def test_over_a_real_socket_with_uvicorn(api: Api) -> None:
    """The same app behind uvicorn on 127.0.0.1 port 0: a submission, and an oversize body
    refused from its Content-Length before it is read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and not serving.done()
            await asyncio.sleep(0.01)
        headers = {"Authorization": f"Bearer {api.tokens['jane']}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            response = await c.post("/v1/messages", json=message())
            assert response.status_code == 202, response.text
            huge = b'{"text": "' + b"z" * 300_000 + b'"}'
            response = await c.post(
                "/v1/messages", content=huge, headers={"content-type": "application/json"}
            )
            assert_problem(response, 413, "body")
    finally:
        server.should_exit = True
        await serving
        sock.close()
    assert len(await stored(api)) == 1


async def test_an_unknown_query_parameter_is_refused_and_known_ones_work(api: Api) -> None:
    """`?stat=queued` (a typo) must not silently list everything; checked without a thread
    switch when there is no query, and off the event loop when there is one."""
    jane = api.client("jane")
    assert (await jane.post("/v1/messages", json=message())).status_code == 202
    refused = await jane.get("/v1/messages", params={"stat": "queued"})
    assert_problem(refused, 422, "unknown query parameter: stat")
    refused = await jane.post("/v1/messages", params={"dry": "1"}, json=message())
    assert_problem(refused, 422, "unknown query parameter: dry")
    listed = await jane.get("/v1/messages", params={"state": "queued", "limit": 1})
    assert listed.status_code == 200 and len(listed.json()["data"]) == 1
    assert len(await stored(api)) == 1
