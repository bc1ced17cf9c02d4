"""`mailvia testserver --fake-providers` as a subprocess, for end-to-end tests: its origin, the
MAILVIA_* settings it prints, its SMTP side (when asked) and its `/_fake/` control surface."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.cli import Cli, LongRunning


@dataclass
class FakeProcess:
    origin: str
    settings: dict[str, str]
    process: LongRunning
    smtp_port: int | None = None

    def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = httpx.request(method, f"{self.origin}/_fake/{path}", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def refreshes(self) -> int:
        return sum(self.control("GET", "refreshes").values())


@contextmanager
def fake_process(root: Path, *args: str) -> Iterator[FakeProcess]:
    """Start the fake (plus `args`, e.g. an SMTP listener with TLS); stop it by its PID."""
    cli = Cli(root / "fake-data")
    process = cli.start(
        "testserver",
        "--fake-providers",
        "--listen-http",
        "127.0.0.1:0",
        "--maildir",
        str(root / "fake-mail"),
        *args,
        log_dir=root,
    )
    try:
        origin = process.wait_for_line(r"^listening (http://127\.0\.0\.1:\d+)$").group(1)
        settings = dict(line.split("=", 1) for line in process.lines if line.startswith("MAILVIA_"))
        smtp = next((line for line in process.lines if line.startswith("listening smtp")), None)
        port = int(smtp.rsplit(":", 1)[1]) if smtp else None
        yield FakeProcess(origin, settings, process, port)
    finally:
        process.stop()
