"""End to end: `mailvia serve` as a real subprocess runs the webhook dispatcher beside the mail
dispatcher, and serves metrics on its own listener (METRICS_LISTEN) and, behind
METRICS_TOKEN, on the HTTP listener. Mail goes to the project's test SMTP server and events
to a real HTTP receiver on 127.0.0.1; waits poll with a deadline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook as Verifier

from mailvia.testserver import ThreadedTestServer
from support.cli import Cli, poll, require_console_script
from support.receiver import Receiver

pytestmark = pytest.mark.timeout(180)

JANE, BOSS = "jane@acme.test", "boss@acme.test"
TOKEN = "e2e-metrics-token"
LISTENING = r"^listening {kind} (http://127\.0\.0\.1:\d+)(/metrics)?$"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """acme with jane (a member) and boss (an admin), and an API token of each."""
    require_console_script()
    data_dir = tmp_path_factory.mktemp("webhooks-template") / "data"
    cli = Cli(data_dir)
    cli.ok("admin", "create-org", "acme")
    cli.ok("admin", "create-team", "sales", "--org", "acme")
    cli.ok("admin", "add-domain", "acme", "acme.test")
    cli.ok("admin", "create-user", JANE, "--org", "acme", "--team", "sales")
    cli.ok("admin", "create-user", BOSS, "--org", "acme", "--team", "sales", "--admin")
    jane = cli.ok("admin", "create-token", JANE).stdout.strip()
    return data_dir, jane, cli.ok("admin", "create-token", BOSS).stdout.strip()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer("127.0.0.1", 0, maildir=tmp_path / "caught") as server:
        yield server


def scrape(http: httpx.Client, wanted: str) -> httpx.Response | None:
    """The token-guarded /metrics, once it has `wanted` (None before)."""
    scraped = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    return scraped if scraped.status_code != 200 or wanted in scraped.text else None


def test_serve_posts_events_to_webhooks_and_serves_metrics(
    tmp_path: Path, template: tuple[Path, str, str], sink: ThreadedTestServer
) -> None:
    data_dir, jane, boss = template
    shutil.copytree(data_dir, tmp_path / "data")
    # delivery in serve's worker process: its counters reach serve's /metrics through a file
    cli = Cli(tmp_path / "data", MAILVIA_METRICS_TOKEN=TOKEN, MAILVIA_DISPATCH="process")
    cli.ok(
        "channel", "add", "jane-box", "--org", "acme", "--user", JANE, "--host", "127.0.0.1",
        "--port", str(sink.port), "--security", "none", "--auth", "none",
    )  # fmt: skip
    process = cli.start("serve", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    try:
        base = process.wait_for_line(LISTENING.format(kind="http"))[1]
        metrics_url = process.wait_for_line(LISTENING.format(kind="metrics"))[1] + "/metrics"
        with Receiver() as hooks, httpx.Client(base_url=base, trust_env=False) as http:
            made = http.post(
                "/v1/webhooks",
                json={"url": hooks.url(), "events": ["message.delivered"]},
                headers={"Authorization": f"Bearer {boss}"},
            )
            assert made.status_code == 201, made.text
            body = {"from": JANE, "to": ["buyer@example.com"], "subject": "hi", "text": "hello"}
            sent = http.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {jane}"})
            assert sent.status_code == 202, sent.text
            (request,) = hooks.wait_for(1, timeout=30)
            payload = Verifier(made.json()["secret"]).verify(request.body, request.headers)
            assert payload["type"] == "message.delivered"
            assert payload["data"]["message_id"] == sent.json()["id"]

            assert http.get("/metrics").status_code == 401
            # counted by the worker process, which writes them for serve every second
            scraped = poll(lambda: scrape(http, "mailvia_deliveries_total{"), timeout=30)
            assert scraped.status_code == 200, scraped.text
            own = httpx.get(metrics_url, trust_env=False)
            assert own.status_code == 200 and "mailvia_webhook_attempts_total{" in own.text
    finally:
        code = process.stop()
    assert code == 0, f"serve exited {code}\n{process.stderr}"
