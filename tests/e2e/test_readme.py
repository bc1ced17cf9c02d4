"""End to end: the README's walkthroughs run as written, so they cannot rot.

Each fenced block of a walkthrough is one terminal: a fresh `bash` in a temporary folder
(with `.venv` linked to this virtualenv) whose environment holds only PATH, HOME and LANG,
plus what that terminal's own commands export. A block whose last command is `mailvia serve`
or `mailvia testserver` keeps running in the background until the test stops it (SIGTERM to
its process group, by the terminal's PID); the others run to the end and must exit 0.

Ports are the README's own unless one is taken here: then only what the README says may
differ changes (the test server's `--listen` and the channel's `--port`;
`MAILVIA_HTTP_LISTEN` / `MAILVIA_SUBMISSION_LISTEN` exported in serve's terminal).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.browser import chromium
from support.cli import LongRunning, poll, require_console_script
from support.pages import press

pytestmark = pytest.mark.timeout(240)

README = Path(__file__).resolve().parents[2] / "README.md"
VENV = Path(sys.executable).parents[1]
SERVERS = re.compile(r"^\.venv/bin/mailvia (serve|testserver)\b")


def section(title: str) -> str:
    """The README's text under this heading, up to the next heading."""
    text = README.read_text()
    start = text.index(f" {title}\n")
    following = re.search(r"^#+ ", text[start + len(title) + 2 :], re.M)
    return text[start : start + len(title) + 2 + (following.start() if following else len(text))]


def terminals(text: str) -> list[str]:
    """The fenced shell blocks of a section, in order: one terminal each."""
    return re.findall(r"^```\n(.*?)^```$", text, re.S | re.M)


def commands(block: str) -> list[str]:
    """A block's commands, each continuation line joined to its command."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Terminals:
    """Fresh shells in one folder; the background ones are stopped at the end."""

    folder: Path
    running: list[LongRunning] = field(default_factory=list)

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        home = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.folder)}
        return home | {"LANG": "C.UTF-8"} | extra

    def start(self, block: str, extra: dict[str, str]) -> LongRunning:
        stderr_path = self.folder / f"terminal-{len(self.running)}.stderr"
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(
                ["bash", "-c", block],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.environment(extra),
                cwd=self.folder,
                start_new_session=True,  # the terminal and what it runs: one group to stop
            )
        self.running.append(LongRunning(process, stderr_path))
        return self.running[-1]

    def run(self, block: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-e", "-c", block],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.environment(extra),
            cwd=self.folder,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, (
            f"{block}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done

    def stop(self) -> None:
        for terminal in reversed(self.running):
            if terminal.process.poll() is None:
                os.killpg(terminal.pid, signal.SIGTERM)
            terminal.stop()


@pytest.fixture
def shells(tmp_path: Path) -> Iterator[Terminals]:
    require_console_script()
    (tmp_path / ".venv").symlink_to(VENV)
    opened = Terminals(tmp_path)
    try:
        yield opened
    finally:
        opened.stop()


def with_free_ports(text: str, blocks: list[str]) -> tuple[list[str], dict[str, str]]:
    """The blocks as written, or with the ports the README lets differ moved when taken
    here; and what to export in serve's terminal for that."""
    if not free(2525):
        assert "another `--listen` and the channel that `--port`" in text
        port = str(any_free_port())
        blocks = [b.replace("127.0.0.1:2525", f"127.0.0.1:{port}") for b in blocks]
        blocks = [b.replace("--port 2525", f"--port {port}") for b in blocks]
    serve: dict[str, str] = {}
    for name, port in (("MAILVIA_HTTP_LISTEN", 8025), ("MAILVIA_SUBMISSION_LISTEN", 8587)):
        if not free(port):
            assert f"`{name}=127.0.0.1:PORT`" in text
            serve[name] = f"127.0.0.1:{any_free_port()}"
    return blocks, serve


def test_try_it_without_a_real_mail_server(shells: Terminals) -> None:
    text = section("Try it without a real mail server")
    blocks, serve_env = with_free_ports(text, terminals(text))
    assert [bool(SERVERS.match(commands(b)[-1])) for b in blocks] == [True, True, False]

    testserver = shells.start(blocks[0], {})
    testserver.wait_for_line(r"^listening smtp://127\.0\.0\.1:\d+$")
    serve = shells.start(blocks[1], serve_env)
    url = serve.wait_for_line(r"^listening http (http://127\.0\.0\.1:\d+)$")[1]
    assert url.endswith(serve_env.get("MAILVIA_HTTP_LISTEN", ":8025").rpartition(":")[2])
    assert any("one-time password" in line for line in serve.lines)

    done = shells.run(blocks[2], {})
    assert re.search(r"^msg_\w+ delivered$", done.stdout, re.M), done.stdout
    caught = shells.folder / "caught"
    poll(lambda: (caught / "received.jsonl").exists(), timeout=30)
    (received,) = [
        json.loads(line) for line in (caught / "received.jsonl").read_text().split("\n") if line
    ]
    assert received["rcpt_to"] == ["bob@example.com"], received
    (stored,) = (caught / "new").iterdir()
    assert b"first message" in stored.read_bytes() and b"Subject: hello" in stored.read_bytes()


@pytest.mark.chromium
def test_connect_gmail_against_the_fake_provider(shells: Terminals) -> None:
    text = section("Connect Gmail against the fake provider (offline)")
    blocks = terminals(text)
    assert [bool(SERVERS.match(commands(b)[-1])) for b in blocks] == [True, True, False, False]
    blocks, serve_env = gmail_ports(text, blocks)

    fake = shells.start(blocks[0], {})
    fake.wait_for_line(r"^listening http://127\.0\.0\.1:\d+$")
    serve = shells.start(blocks[1], serve_env)
    url = serve.wait_for_line(r"^listening http (http://127\.0\.0\.1:\d+)$")[1]
    setup = shells.run(blocks[2], {})
    one_time = re.search(r"^one-time password: (\S+)$", setup.stdout, re.M)
    assert one_time, setup.stdout

    with chromium() as browser:
        page = browser.new_context().new_page()
        page.set_default_timeout(30_000)
        connect_in_the_browser(page, url, one_time[1])

    sent = shells.run(blocks[3], {})
    assert re.search(r"^msg_\w+ delivered$", sent.stdout, re.M), sent.stdout
    log = shells.folder / "fake-mail" / "received.jsonl"
    poll(lambda: log.exists() and log.read_text().strip(), timeout=30)
    (received,) = [json.loads(line) for line in log.read_text().splitlines() if line]
    assert received["via"] == "gmail_api" and received["rcpt_to"] == ["bob@example.com"]


def connect_in_the_browser(page: Any, url: str, one_time: str) -> None:
    """What the README says to do on the pages: sign in as jane with the one-time password
    (choosing a new one), Connect Gmail, type jane's address on the consent page, Allow."""
    page.goto(url)
    page.get_by_label("Email").fill("jane@acme.test")
    page.get_by_label("Password", exact=True).fill(one_time)
    press(page, "Sign in")
    new = one_time + "-and-then-some"
    page.get_by_label("Current password").fill(one_time)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    press(page, "Change password")
    if "/channel" not in page.url:
        page.get_by_role("link", name="My delivery channel").first.click()
        page.wait_for_load_state()
    with page.expect_navigation():
        page.get_by_role("link", name="Connect Gmail", exact=True).click()
    page.get_by_label("Account").fill("jane@acme.test")
    with page.expect_navigation(url=re.compile(re.escape(url) + ".*")):
        page.get_by_role("button", name="Allow").click()
    page.wait_for_load_state()
    shown = page.inner_text("main")
    assert "Gmail jane@acme.test" in shown, shown


def gmail_ports(text: str, blocks: list[str]) -> tuple[list[str], dict[str, str]]:
    """The Gmail walkthrough's blocks, with the fake's port and serve's moved when taken here
    (as its text allows)."""
    if not free(9000):
        assert "another `--listen-http`" in text
        port = str(any_free_port())
        blocks = [b.replace("127.0.0.1:9000", f"127.0.0.1:{port}") for b in blocks]
    serve: dict[str, str] = {}
    for name, port in (("MAILVIA_HTTP_LISTEN", 8025), ("MAILVIA_SUBMISSION_LISTEN", 8587)):
        if not free(port):
            assert f"`{name}=127.0.0.1:PORT`" in text
            serve[name] = f"127.0.0.1:{any_free_port()}"
    return blocks, serve
