"""Run the `mailvia` console script as real subprocesses, for end-to-end tests.

`Cli(data_dir)` runs one-shot commands (each bounded by a timeout) with its own
MAILVIA_DATA_DIR, MAILVIA_ALLOW_PRIVATE_HOSTS=127.0.0.0/8, MAILVIA_SUBMISSION_LISTEN=127.0.0.1:0
and no other MAILVIA_* setting from the caller's environment. `Cli.start(...)` starts a
long-running command (`serve`, `testserver`) whose stdout lines are read by a thread, so a test
can wait for a line with a deadline; `LongRunning.stop()` sends SIGTERM to that PID and waits.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

MAILVIA = Path(sys.executable).parent / "mailvia"
PRIVATE_HOSTS = "127.0.0.0/8"
COMMAND_TIMEOUT = 60.0
T = TypeVar("T")


def require_console_script() -> Path:
    if not MAILVIA.exists():
        pytest.skip(f"{MAILVIA} not found: run .venv/bin/pip install -q -e '.[test]'")
    return MAILVIA


@dataclass(frozen=True)
class Result:
    """A finished command: its arguments, exit code and output."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"mailvia {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


class Cli:
    """The `mailvia` command bound to one data folder."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.cwd = data_dir.parent
        self.env = base_env(data_dir, env)

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> Result:
        """Run `mailvia ARGS...` to completion (killed after `timeout` seconds)."""
        completed = subprocess.run(
            [str(require_console_script()), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )
        return Result(tuple(args), completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Run and assert exit code 0 (the failure message shows the whole output)."""
        result = self.run(*args, **kwargs)
        assert result.code == 0, str(result)
        return result

    def start(self, *args: str, log_dir: Path | None = None) -> LongRunning:
        """Start `mailvia ARGS...` in the background; its stdout is read line by line."""
        log_dir = log_dir or self.cwd
        name = re.sub(r"[^a-z0-9]+", "-", args[0] if args else "mailvia")
        stderr_path = log_dir / f"{name}-{time.monotonic_ns()}.stderr"
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(
                [str(require_console_script()), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self.env,
                cwd=self.cwd,
            )
        return LongRunning(process, stderr_path)


def base_env(data_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    env.update(
        MAILVIA_DATA_DIR=str(data_dir),
        MAILVIA_ALLOW_PRIVATE_HOSTS=PRIVATE_HOSTS,
        # `serve` also listens for SMTP submission: a free port, never the fixed default
        MAILVIA_SUBMISSION_LISTEN="127.0.0.1:0",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


@dataclass
class LongRunning:
    """A background `mailvia` process; stop it with `stop()` (SIGTERM to its PID, then wait)."""

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Read stdout lines until one matches `pattern` (re.search); raises AssertionError
        when the process ends or the deadline passes first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                match = re.search(pattern, line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._describe(f"no line matching {pattern!r} in {timeout}s"))
            try:
                got = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if got is None:
                self.process.wait(timeout=10)
                raise AssertionError(self._describe(f"exited before printing {pattern!r}"))
            self.lines.append(got)

    def drain(self) -> list[str]:
        """Every stdout line read so far (without waiting)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM this PID and wait; SIGKILL if it does not stop in time. Returns the exit
        code (the negative signal number when it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self.drain()
        return self.process.returncode

    def _describe(self, what: str) -> str:
        return (
            f"mailvia (pid {self.pid}) {what}; exit {self.process.poll()}\n"
            f"--- stdout ---\n" + "\n".join(self.lines) + f"\n--- stderr ---\n{self.stderr}"
        )


def poll(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Call `check` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"still waiting after {timeout}s (last: {value!r})")
        time.sleep(interval)
