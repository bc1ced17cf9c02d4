"""The fake providers' lifecycle: `FakeProviders` (async) and `ThreadedFakeProviders` (a thread).

Side effects: listens on an HTTP port (uvicorn, h11) and, with `smtp_port`, on an SMTP port
offering XOAUTH2 (`TestServer`); writes the maildir (a temporary one unless given).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from mailvia.testserver.capture import Capture
from mailvia.testserver.fake.app import build_app
from mailvia.testserver.fake.oauth import smtp_verdict
from mailvia.testserver.fake.state import FakeOptions, FakeState
from mailvia.testserver.fake.tokens import Consent
from mailvia.testserver.fake.urls import provider_settings
from mailvia.testserver.server import ServerOptions, TestServer
from mailvia.testserver.threaded import InThread
from mailvia.testserver.xoauth2 import Xoauth2Verdict

_POLL_SECONDS = 0.01


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the command (or the test) owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeProviders:
    """Fake Google and Microsoft (OAuth, Gmail API, Graph) on `host:port` (0: a free port).

    Use as `async with FakeProviders(...) as fake:`; `fake.settings` points mailvia at it.
    With `smtp_port` it also runs the test SMTP server (options `smtp_options`) accepting
    XOAUTH2 with this fake's access tokens; both write one maildir and `received.jsonl`.
    Raises ValueError for a bad fault spec (at construction), OSError when it cannot listen.
    """

    __test__ = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        options: FakeOptions | None = None,
        smtp_port: int | None = None,
        smtp_options: ServerOptions | None = None,
        maildir: Path | None = None,
        keep_maildir: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.options = options or FakeOptions()
        FakeState.check_faults(self.options)
        self._port = port
        self._clock = clock
        self._maildir_given = maildir
        self._keep_maildir = keep_maildir or maildir is not None
        self.smtp: TestServer | None = None
        if smtp_port is not None:
            smtp: ServerOptions = {
                **(smtp_options or {}),
                "faults": self.options.faults,
                "faults_file": self.options.faults_file,
                "maildir": maildir,
                "keep_maildir": keep_maildir,
                "xoauth2": self._xoauth2,
            }
            self.smtp = TestServer(host, smtp_port, **smtp)
        self._state: FakeState | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._maildir: Path | None = None

    async def __aenter__(self) -> FakeProviders:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _xoauth2(self, user: str, token: str) -> Xoauth2Verdict:
        if self._state is None:
            return Xoauth2Verdict(None)
        return smtp_verdict(self._state, user, token)

    async def start(self) -> None:
        """Listen (SMTP first, when asked) and serve. Raises OSError when a port is taken."""
        try:
            capture = await self._capture()
            self._state = FakeState(self.options, capture, clock=self._clock)
            sock = _bound_socket(self.host, self._port)
        except BaseException:
            await self._release()
            raise
        self._port = int(sock.getsockname()[1])
        self._state.origin = self.origin
        config = uvicorn.Config(
            build_app(self._state),
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the fake providers did not start on {self.origin}")
            await asyncio.sleep(_POLL_SECONDS)

    async def _capture(self) -> Capture:
        if self.smtp is not None:
            await self.smtp.start()
            self._maildir = self.smtp.maildir
            return self.smtp.capture
        given = self._maildir_given
        self._maildir = (given or Path(tempfile.mkdtemp(prefix="mailvia-fake-"))).resolve()
        return Capture(self._maildir)

    async def stop(self) -> None:
        """Close held connections, stop serving, stop the SMTP side; remove a temporary maildir."""
        if self._state is not None:
            for transport in list(self._state.held):
                transport.close()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._server = self._task = None
        await self._release()

    async def _release(self) -> None:
        if self.smtp is not None:
            await self.smtp.stop()
        elif not self._keep_maildir and self._maildir is not None:
            shutil.rmtree(self._maildir, ignore_errors=True)

    @property
    def state(self) -> FakeState:
        """The shared state (tokens, log, faults). Raises RuntimeError before start."""
        if self._state is None:
            raise RuntimeError("the fake providers are not started")
        return self._state

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> str:
        """`http://HOST:PORT`, the stand-in for every real provider host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def settings(self) -> dict[str, str]:
        """The MAILVIA_* settings pointing mailvia at this fake."""
        return provider_settings(self.origin)

    @property
    def maildir(self) -> Path:
        if self._maildir is None:
            raise RuntimeError("the fake providers are not started")
        return self._maildir

    @property
    def smtp_url(self) -> str | None:
        return self.smtp.url if self.smtp is not None else None

    @property
    def received(self) -> list[dict[str, Any]]:
        """What reached the maildir (API and SMTP), as `received.jsonl` plus `content`."""
        return self.state.capture.received

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The provider requests so far (see `control.py` for the fields)."""
        return self.state.log.entries()

    def consents(self) -> list[Consent]:
        return self.state.store.consents()

    def refresh_counts(self) -> dict[str, int]:
        return self.state.store.refresh_counts()

    def revoke(self, account: str, provider: str | None = None) -> int:
        """Revoke the account's consents (a user removing consent); returns how many."""
        return self.state.store.revoke_account(account, provider)

    def expire(self, account: str, provider: str | None = None) -> int:
        """Expire the account's access tokens now; returns how many."""
        return self.state.store.expire_account(account, provider)

    def set_faults(self, faults: Sequence[str]) -> None:
        """Replace the HTTP faults and the SMTP ones (budgets start afresh). Raises ValueError."""
        self.state.set_faults(faults)
        if self.smtp is not None:
            self.smtp.set_faults(faults)


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ThreadedFakeProviders(InThread):
    """`FakeProviders` run by its own event loop in a background thread, for synchronous tests.

    Use `with ThreadedFakeProviders(...) as fake:`; the arguments are those of `FakeProviders`,
    and so are the properties and control methods (safe to call from the test's thread).
    """

    __test__ = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.fake = FakeProviders(host, port, **kwargs)
        super().__init__(self.fake, name="mailvia-fake")

    def __enter__(self) -> FakeProviders:
        self.start()
        return self.fake

    def start(self, timeout: float = 30.0) -> FakeProviders:
        """Start the thread, wait until listening; returns the running `FakeProviders`."""
        self._start_thread(timeout)
        return self.fake
