"""End to end: the API's documentation works with the network cut off. A real headless
Chromium opens `/docs` (Swagger UI) and `/redoc` of a running `mailvia serve` with every
request to a host other than 127.0.0.1 aborted: each page shows the API's operations, asked
nothing of another host, and logged no error (a script or style refused by the content
security policy would be one). The pages as sent name no other host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from support.browser import chromium
from support.cli import Cli, require_console_script
from support.served import Served, serving, tenants

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(180)]

LOGO = re.compile(r"Loading the image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg' violates")
ELSEWHERE = re.compile(r"(?:https?:)?//(?!127\.0\.0\.1[:/])[\w.-]+", re.I)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_console_script()
    data_dir = tmp_path_factory.mktemp("docs") / "data"
    with serving(Cli(data_dir), tenants(data_dir, "jane")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


class Offline:
    """A browser tab that reaches 127.0.0.1 only: what else it asked for, and its errors."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(30_000)
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._only_loopback)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _only_loopback(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def offline(browser: Any) -> Iterator[Offline]:
    tab = Offline(browser)
    try:
        yield tab
    finally:
        tab.context.close()


def operations(served: Served) -> list[str]:
    """The operationId of each operation in the API's document."""
    with served.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
    return [op["operationId"] for item in document["paths"].values() for op in item.values()]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_documentation_names_no_other_host(served: Served, path: str) -> None:
    with served.client() as anonymous:
        page = anonymous.get(path)
    assert page.status_code == 200
    assert not ELSEWHERE.findall(page.text), ELSEWHERE.findall(page.text)
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/docs/assets/"), asset
        fetched = httpx.get(served.base + asset, trust_env=False)
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
        assert fetched.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_shows_every_operation_offline(served: Served, offline: Offline) -> None:
    expected = operations(served)
    offline.page.goto(served.base + "/docs")
    blocks = offline.page.locator("div.opblock[id^='operations-']")
    blocks.first.wait_for(state="visible")
    shown = [block.get_attribute("id") for block in blocks.all() if block.is_visible()]
    missing = [op for op in expected if not any(id.endswith(f"-{op}") for id in shown)]
    assert len(expected) > 20 and not missing, missing  # an operation with two tags shows twice
    assert offline.page.get_by_text("/v1/messages", exact=True).first.is_visible()
    assert offline.page.locator(".info .title").inner_text().startswith("mailvia")
    assert offline.blocked == [] and offline.errors == [], (offline.blocked, offline.errors)


def test_redoc_shows_every_operation_offline(served: Served, offline: Offline) -> None:
    expected = operations(served)
    offline.page.goto(served.base + "/redoc")
    offline.page.locator("[data-section-id^='operation/']").first.wait_for(state="attached")
    sections = offline.page.locator("[data-section-id^='operation/']").all()
    shown = [section.get_attribute("data-section-id") for section in sections]
    missing = [op for op in expected if not any(id.endswith(f"/{op}") for id in shown)]
    assert len(expected) > 20 and not missing, missing
    assert offline.page.get_by_role("heading", name=re.compile("^mailvia")).first.is_visible()
    # ReDoc's bundle always asks for Redocly's logo from its CDN (and hides it when that
    # fails): the policy refuses it before any request leaves, which Chromium logs.
    errors = [e for e in offline.errors if not LOGO.match(e)]
    assert offline.blocked == [] and errors == [], (offline.blocked, errors)
