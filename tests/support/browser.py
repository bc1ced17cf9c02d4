"""A real headless Chromium (Debian's `chromium`, never a downloaded build) driven by Playwright,
and the checks every page gets: axe-core finds no serious or critical violation at 1280 and
390 px, nothing scrolls sideways at 390 px, and screenshots of both widths go to
`artifacts/screenshots/`. `tab_stops` tabs through a page and `assert_reading_order` checks
that focus moves the way the page reads (down, and left to right within a row)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
BLOCKING = ("serious", "critical")


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser (skips when Debian's chromium or the playwright package is missing)."""
    if not CHROMIUM.exists():
        pytest.skip("chromium not found: install the Debian package chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def desktop_page(browser: Any) -> Iterator[Any]:
    """A tab in a fresh context at 1280 x 900, waiting at most 20 s for anything; closed after."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in found
        if v["impact"] in BLOCKING
    ]


def check_page(page: Any, name: str) -> None:
    """Accessibility at both widths, no sideways scrolling on a phone, two screenshots."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        for size, label in ((WIDE, "1280"), (PHONE, "390")):
            page.set_viewport_size(size)
            found = violations(page)
            assert not found, f"{name} at {label} px: " + "\n".join(found)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} scrolls sideways at 390 px ({width} px wide)"
    finally:
        page.set_viewport_size(WIDE)


@dataclass(frozen=True)
class Stop:
    """Where Tab put the focus: a short description and the element's box."""

    what: str
    x: float
    y: float
    width: float
    height: float


_FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const r = e.getBoundingClientRect();
  const label = e.labels && e.labels.length ? e.labels[0].textContent.trim() : "";
  const text = e.textContent.trim().slice(0, 40);
  const named = ["BUTTON", "A", "SUMMARY"].includes(e.tagName) ? text : "";
  const what = named || e.id || e.getAttribute("name") || label || text;
  return {what: e.tagName.toLowerCase() + ":" + what,
          x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
}"""


def tab_stops(page: Any, count: int) -> list[Stop]:
    """Press Tab `count` times on a page just loaded; where the focus went each time."""
    stops = []
    for _ in range(count):
        page.keyboard.press("Tab")
        found = page.evaluate(_FOCUSED)
        if found is None:
            break
        stops.append(Stop(**found))
    return stops


def assert_reading_order(stops: list[Stop]) -> None:
    """Each stop is below the one before, or on the same row to its right."""
    for before, after in itertools.pairwise(stops):
        centre = after.y + after.height / 2
        below = centre > before.y + before.height
        same_row = before.y <= centre <= before.y + before.height and after.x >= before.x
        assert below or same_row, f"Tab went from {before} back to {after}"
