"""End to end against a running `mailvia serve`: list cursors (messages, events, webhook
deliveries) are sealed and bound to their list and organization: they show no position, and
another organization's cursor, another list's or a made-up one is a 400 problem, not data.
The API's documentation pages and document carry the pages' security headers.

Mail goes to a port where nothing listens, so each message is deferred (an event) and the
admin's webhook, on another such port, is attempted (a delivery) without waiting."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.cli import Cli, poll, require_console_script
from support.served import Served, serving, tenants

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"
OLD_STYLE = re.compile(rb"^[a-z]{3}:\d+$")  # what cursors were: base64 of `msg:1234`


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_console_script()
    data_dir = tmp_path_factory.mktemp("cursors") / "data"
    tokens = tenants(data_dir, "jane", "boss", "ann")
    with serving(Cli(data_dir), tokens) as served:
        with served.client("boss") as boss:
            made = boss.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
            assert made.status_code == 201, made.text
        with served.client("jane") as jane, served.client("ann") as ann:
            for n in range(3):
                body = {"from": JANE, "to": [f"b{n}@example.com"], "text": "hi"}
                assert jane.post("/v1/messages", json=body).status_code == 202
            mine = {"from": "ann@globex.test", "to": ["c@example.com"], "text": "hi"}
            assert ann.post("/v1/messages", json=mine).status_code == 202
        yield served


def page(client: httpx.Client, path: str, cursor: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def refused(client: httpx.Client, path: str, cursor: str) -> None:
    response = client.get(path, params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "cursor" in response.json()["detail"]


def assert_opaque(first: str, second: str) -> None:
    """No position shows: not the old `kind:number`, and two pages' cursors alike only by
    chance (a counter, sealed or not, would share most of its text)."""
    for cursor in (first, second):
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        assert not OLD_STYLE.match(raw) and len(raw) >= 16, cursor
    assert sum(a == b for a, b in zip(first, second, strict=False)) < len(first) // 3


def tampered(cursor: str) -> str:
    """The cursor with its last two characters changed (never to what they were: a cursor
    that already ended in "AA" was once "forged" into itself)."""
    return cursor[:-2] + ("BB" if cursor.endswith("AA") else "AA")


def deliveries_path(boss: httpx.Client) -> str:
    (hook,) = boss.get("/v1/webhooks").json()["data"]
    return f"/v1/webhooks/{hook['id']}/deliveries"


def test_cursors_are_sealed_and_bound_to_their_list_and_organization(served: Served) -> None:
    with served.client("boss") as boss, served.client("ann") as ann:
        first = page(boss, "/v1/messages")
        second = page(boss, "/v1/messages", first["next_cursor"])
        assert first["data"][0]["id"] != second["data"][0]["id"]
        assert_opaque(first["next_cursor"], second["next_cursor"])
        refused(ann, "/v1/messages", first["next_cursor"])  # another organization's

        poll(lambda: len(boss.get("/v1/events").json()["data"]) >= 3, timeout=60)
        events = page(boss, "/v1/events")
        later = page(boss, "/v1/events", events["next_cursor"])
        assert_opaque(events["next_cursor"], later["next_cursor"])
        refused(ann, "/v1/events", events["next_cursor"])
        refused(boss, "/v1/messages", events["next_cursor"])  # another list's

        path = deliveries_path(boss)
        poll(lambda: len(boss.get(path).json()["data"]) >= 2, timeout=60)
        attempts = page(boss, path)
        assert page(boss, path, attempts["next_cursor"])["data"]
        refused(boss, path, events["next_cursor"])
        for forged in ("d2hhOjE", "bXNnOjE", "ZXZ0OjE", tampered(attempts["next_cursor"])):
            refused(boss, path, forged)
            refused(boss, "/v1/messages", forged)


def inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, re.S)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_the_api_documentation_carries_the_pages_security_headers(
    served: Served, path: str
) -> None:
    with served.client() as anonymous:
        response = anonymous.get(path)
        signin = anonymous.get("/signin")
    assert response.status_code == 200
    headers = response.headers
    for name in ("x-frame-options", "x-content-type-options", "referrer-policy"):
        assert headers[name] == signin.headers[name], name
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "base-uri 'none'" in policy
    if path == "/docs":  # Swagger UI: its bundle from here, and its one inline script
        assert "script-src 'self' 'sha256-" in policy and "https:" not in policy
        for script in inline_scripts(response.text):
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
