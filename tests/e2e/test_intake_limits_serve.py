"""End to end: a running `mailvia serve` holds API requests to their caps. The largest batch
allowed (1,000 messages, 10,000 recipients) is taken; a batch over a cap is refused at once
(413) and one over the token's recipient limit too (429 with Retry-After), nothing stored for
either; and meanwhile another client's reads keep their latency (their p95 is compared with a
baseline measured in the same test)."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cli import Cli, poll, require_console_script
from support.served import Served, serving, tenants

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    require_console_script()
    data_dir = tmp_path_factory.mktemp("limits") / "data"
    return data_dir, tenants(data_dir, "jane", "joe")


def batch(messages: int, recipients: int, tag: str) -> bytes:
    body = {
        "messages": [
            {
                "from": JANE,
                "to": [f"r{i}-{j}.{tag}@example.com" for j in range(recipients)],
                "subject": f"quote {i}",
                "text": "hello",
            }
            for i in range(messages)
        ]
    }
    return json.dumps(body).encode()


class Latency:
    """Another client's reads (GET /v1/messages?limit=1 as joe, every 20 ms) in a thread."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.samples: list[float] = []

    @contextmanager
    def measuring(self) -> Iterator[list[float]]:
        """Reads from the block's start to its end; the first, which opens the connection
        (over 1 s on a loaded machine), is made before and not counted."""
        samples: list[float] = []
        stop, ready = threading.Event(), threading.Event()

        def read() -> None:
            with self.served.client("joe", timeout=30) as joe:
                assert joe.get("/v1/messages", params={"limit": 1}).status_code == 200
                ready.set()
                while not stop.is_set():
                    started = time.perf_counter()
                    assert joe.get("/v1/messages", params={"limit": 1}).status_code == 200
                    samples.append(time.perf_counter() - started)
                    stop.wait(0.02)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert ready.wait(30), "the reader never connected"
            yield samples
        finally:
            stop.set()
            reader.join(timeout=30)


def p95(samples: list[float]) -> float:
    assert len(samples) >= 20, samples
    return statistics.quantiles(samples, n=20)[-1]


def post(served: Served, body: bytes) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with served.client("jane", timeout=30) as jane:
        response = jane.post(
            "/v1/messages/batch", content=body, headers={"content-type": "application/json"}
        )
    return response, time.perf_counter() - started


def problem(response: httpx.Response, status: int, words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM_JSON
    found: dict[str, Any] = response.json()
    assert words in found["detail"], found
    return found


def queued(served: Served) -> int:
    counts = Cli(served.data_dir).ok("queue", "--json").json()
    return sum(channel["queued"] for channel in counts.values())


def test_caps_and_the_recipient_budget_refuse_at_once_and_others_keep_their_latency(
    tmp_path: Path, template: tuple[Path, dict[str, str]]
) -> None:
    shutil.copytree(template[0], tmp_path / "data")
    cli = Cli(tmp_path / "data", MAILVIA_DISPATCH="off", MAILVIA_API_RECIPIENT_LIMIT="15000/60")
    with serving(cli, template[1]) as served:
        latency = Latency(served)
        with latency.measuring() as samples:
            time.sleep(2)  # the baseline: nothing else going on (20 reads at least)
            poll(lambda: len(samples) >= 20, timeout=30, interval=0.05)
        baseline = p95(samples)

        with latency.measuring() as samples:
            taken, _ = post(served, batch(1000, 10, "max"))
            assert taken.status_code == 200, taken.text[:500]
            assert [r["status"] for r in taken.json()["data"]] == [202] * 1000

            too_many, seconds = post(served, batch(1000, 1000, "over"))  # 1,000,000, 24 MB
            problem(too_many, 413, "at most 10000 recipients")
            assert seconds < 5.0
            problem(post(served, batch(1001, 1, "many"))[0], 413, "at most 1000 messages")

            over_budget, seconds = post(served, batch(1000, 10, "budget"))  # 10,000 > 5,000 left
            problem(over_budget, 429, "recipients")
            assert 1 <= int(over_budget.headers["Retry-After"]) <= 60 and seconds < 5.0
        during, slowest = p95(samples), max(samples)

        assert queued(served) == 1000
    # Bounded, and near the baseline (a loaded machine slows both); a stall of the event loop
    # would also show as one very slow read, which p95 alone would not count.
    assert during < max(0.25, 3 * baseline) and slowest < 2.0, (baseline, during, slowest)
