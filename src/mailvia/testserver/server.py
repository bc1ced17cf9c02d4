"""The test SMTP server's lifecycle: `TestServer` (async) and `ThreadedTestServer` (own thread).

Side effects: listens on a TCP port; writes into a maildir (a temporary one unless given).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

from mailvia.testserver.capture import Capture
from mailvia.testserver.certs import make_self_signed, server_context
from mailvia.testserver.faults import FaultBook, FaultsFile, parse_faults, parse_faults_text
from mailvia.testserver.protocol import FaultySMTP, ServerState
from mailvia.testserver.threaded import InThread
from mailvia.testserver.xoauth2 import Xoauth2Check

_POLL_SECONDS = 0.01


class ServerOptions(TypedDict, total=False):
    """The keyword options of `TestServer`, for `ThreadedTestServer(**options)`."""

    tls_cert: Path | None
    tls_key: Path | None
    self_signed: bool
    starttls: bool
    implicit_tls: bool
    auth: dict[str, str] | None
    faults: Sequence[str]
    faults_file: Path | None
    maildir: Path | None
    keep_maildir: bool
    xoauth2: Xoauth2Check | None
    pipelining: bool


class TestServer:
    """A fault-injecting SMTP server on `host:port` (0 picks a free port), for tests and the CLI.

    Use as `async with TestServer(...) as srv:`. Raises ValueError for inconsistent options or a
    bad fault spec (at construction), OSError when it cannot listen (at start).
    A maildir it creates itself is removed at stop unless `keep_maildir` is true.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        self_signed: bool = False,
        starttls: bool = True,
        implicit_tls: bool = False,
        auth: dict[str, str] | None = None,
        faults: Sequence[str] = (),
        faults_file: Path | None = None,
        maildir: Path | None = None,
        keep_maildir: bool = False,
        xoauth2: Xoauth2Check | None = None,
        pipelining: bool = True,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self_signed and tls_cert is not None:
            raise ValueError("choose either tls_cert/tls_key or self_signed")
        if implicit_tls and not (self_signed or tls_cert is not None):
            raise ValueError("implicit_tls needs tls_cert/tls_key or self_signed")
        if faults_file is not None and faults_file.exists():
            parse_faults_text(faults_file.read_text(encoding="utf-8"))
        self.host = host
        self._requested_port = port
        self._tls_files = (tls_cert, tls_key) if tls_cert is not None else None
        self._self_signed = self_signed
        self._starttls = starttls
        self.implicit_tls = implicit_tls
        self._users = dict(auth) if auth else None
        self._xoauth2 = xoauth2
        self._pipelining = pipelining
        self._book = FaultBook(parse_faults(faults))
        self._faults_file = faults_file
        self._maildir_given = maildir
        self._keep_maildir = keep_maildir or maildir is not None
        self._maildir: Path | None = None
        self.ca_cert_path: Path | None = None
        self._state: ServerState | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    async def __aenter__(self) -> TestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the maildir (and certificates) and start listening. Raises OSError."""
        maildir = self._maildir_given or Path(tempfile.mkdtemp(prefix="mailvia-testserver-"))
        self._maildir = maildir.resolve()
        try:
            await self._listen(self._maildir)
        except BaseException:
            if self._maildir_given is None:  # nobody was told about it: do not leave it behind
                shutil.rmtree(self._maildir, ignore_errors=True)
            raise

    async def _listen(self, maildir: Path) -> None:
        context = self._tls_context(maildir)
        state = ServerState(
            capture=Capture(maildir),
            faults=self._book,
            faults_file=FaultsFile(self._faults_file) if self._faults_file else None,
            users=self._users,
            implicit_tls=self.implicit_tls,
            xoauth2=self._xoauth2,
            pipelining=self._pipelining,
        )
        starttls = context if context is not None and self._starttls else None
        if self.implicit_tls:
            starttls = None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: FaultySMTP(state, starttls),
            self.host,
            self._requested_port,
            ssl=context if self.implicit_tls else None,
        )
        self._state = state
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, close every open connection and wait until their sessions are logged."""
        server, state = self._server, self._state
        if server is None or state is None:
            return
        self._server = None
        server.close()
        for connection in list(state.live):
            connection.close_now()
        for task in list(state.pending):
            task.cancel()  # a `data-end=stall:S` store still waiting
        deadline = time.monotonic() + 5.0
        while state.live and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
        await server.wait_closed()
        if not self._keep_maildir and self._maildir is not None:
            shutil.rmtree(self._maildir, ignore_errors=True)

    def _tls_context(self, maildir: Path) -> ssl.SSLContext | None:
        if self._self_signed:
            files = make_self_signed(maildir / "tls")
            self.ca_cert_path = files.ca_cert
            return server_context(files.cert, files.key)
        if self._tls_files is not None:
            cert, key = self._tls_files
            assert cert is not None and key is not None
            return server_context(cert, key)
        return None

    @property
    def port(self) -> int:
        """The port listened on. Raises RuntimeError before start."""
        if self._port is None:
            raise RuntimeError("the test server is not started")
        return self._port

    @property
    def url(self) -> str:
        """`smtp://HOST:PORT`, or `smtps://HOST:PORT` with implicit TLS."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{host}:{self.port}"

    @property
    def maildir(self) -> Path:
        """Where messages, `received.jsonl` and `sessions.jsonl` go. Raises RuntimeError."""
        if self._maildir is None:
            raise RuntimeError("the test server is not started")
        return self._maildir

    @property
    def capture(self) -> Capture:
        """The maildir writer (shared with the fake providers). Raises RuntimeError."""
        if self._state is None:
            raise RuntimeError("the test server is not started")
        return self._state.capture

    @property
    def received(self) -> list[dict[str, Any]]:
        """Stored messages as in `received.jsonl`, each plus `"content": bytes`."""
        return self._state.capture.received if self._state is not None else []

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Connections so far as in `sessions.jsonl`; open ones have `closed_at` None."""
        return self._state.capture.sessions if self._state is not None else []

    def set_faults(self, faults: Sequence[str]) -> None:
        """Replace the `STAGE[*N]=ACTION` faults (budgets start afresh). Raises ValueError."""
        self._book = FaultBook(parse_faults(faults))
        if self._state is not None:
            self._state.faults = self._book

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until at least `count` messages are stored; returns them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while len(received := self.received) < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(received)} of {count} messages after {timeout}s")
            await asyncio.sleep(_POLL_SECONDS)
        return received


class ThreadedTestServer(InThread):
    """The same server run by its own event loop in a background thread, for synchronous tests.

    Use `start()`/`stop()` or `with ThreadedTestServer(...) as srv:`; options as `TestServer`.
    """

    __test__ = False

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, **options: Unpack[ServerOptions]
    ) -> None:
        self.server = TestServer(host, port, **options)
        super().__init__(self.server, name="mailvia-testserver")

    def __enter__(self) -> ThreadedTestServer:
        self.start()
        return self

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread and wait until the server listens. Raises what the start raised."""
        self._start_thread(timeout)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def maildir(self) -> Path:
        return self.server.maildir

    @property
    def ca_cert_path(self) -> Path | None:
        return self.server.ca_cert_path

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.server.received

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.server.sessions

    def set_faults(self, faults: Sequence[str]) -> None:
        """As `TestServer.set_faults`; takes effect at the next command."""
        self.server.set_faults(faults)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until at least `count` messages are stored; returns them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while len(received := self.received) < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(received)} of {count} messages after {timeout}s")
            time.sleep(_POLL_SECONDS)
        return received
