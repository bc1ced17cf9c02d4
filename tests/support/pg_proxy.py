"""A TCP proxy on 127.0.0.1 in front of PostgreSQL that can lose a statement's answer after the
server committed it: told to `cut` a statement (by a piece of its text), it forwards the
statement, swallows the server's answer up to its ReadyForQuery (sent once the statement's
implicit transaction has committed) and closes both sides, so the client reads a dropped
connection; or (`at_once`) drops the client's side as soon as the statement is sent, while the
server runs it. Meanwhile, and until told otherwise, it may `refuse` new connections (a database
out of reach). Every other byte is forwarded as it comes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import sqlalchemy as sa

READY_FOR_QUERY = b"Z"


class PgProxy:
    """Start with `with PgProxy(url) as proxy:`; `proxy.url` is `url` through it."""

    def __init__(self, url: str) -> None:
        target = sa.make_url(url)
        self._upstream = (target.host or "127.0.0.1", target.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        through = target.set(host="127.0.0.1", port=self._listener.getsockname()[1])
        self.url = through.render_as_string(hide_password=False)
        self.cut_text: bytes | None = None  # the next statement holding this loses its answer
        self.refusing = False  # new connections closed at once
        self._then_refuse = False
        self._at_once = False
        self.cuts = 0  # answers lost so far
        self.refused = 0  # connections refused so far
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> PgProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Every socket closed and every thread ended (each sees its socket closed)."""
        _close(self._listener)  # its shutdown wakes the accept
        self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def running(self) -> list[threading.Thread]:
        """The proxy's threads still running (none once it is closed)."""
        with self._lock:
            return [t for t in (self._thread, *self._threads) if t.is_alive()]

    def cut(self, text: str, *, then_refuse: bool = False, at_once: bool = False) -> None:
        """Lose the answer of the next statement containing `text`; with `then_refuse`, refuse
        connections from that moment on (until `refusing` is set back to False); `at_once`,
        drop the connection as soon as the statement is sent, while the server runs it."""
        self._then_refuse = then_refuse
        self._at_once = at_once
        self.cut_text = text.encode()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.refusing:
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                _close(client)
                continue
            link = _Link(self, client, server)
            both = [
                threading.Thread(target=run, daemon=True) for run in (link.requests, link.answers)
            ]
            with self._lock:
                self._sockets += [client, server]
                self._threads += both
            for thread in both:
                thread.start()


class _Link:
    """One client connection and its server connection."""

    def __init__(self, proxy: PgProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.cutting = threading.Event()

    def requests(self) -> None:
        tail = b""
        for data in _received(self.client):
            text = self.proxy.cut_text
            if text is not None and text in tail + data:
                self.proxy.cut_text = None
                self.cutting.set()  # before the server can answer
            tail = data[-200:]
            if not _sent(self.server, data):
                break
            if self.cutting.is_set() and self.proxy._at_once:
                self.proxy.cuts += 1
                _close(self.client)  # the server goes on with the statement
                return
        _close(self.server)

    def answers(self) -> None:
        pending = b""
        for data in _received(self.server):
            if not self.cutting.is_set():
                if not _sent(self.client, data):
                    break
                continue
            pending += data
            if _ready_for_query(pending):
                if self.proxy._then_refuse:
                    self.proxy.refusing = True
                self.proxy.cuts += 1
                break
        _close(self.client)
        _close(self.server)


def _ready_for_query(stream: bytes) -> bool:
    """Whether the server's messages in `stream` (from a message's start) reach a
    ReadyForQuery: each is a type byte, then its length (itself included) on 4 bytes."""
    at = 0
    while at + 5 <= len(stream):
        kind = stream[at : at + 1]
        (length,) = struct.unpack("!I", stream[at + 1 : at + 5])
        if kind == READY_FOR_QUERY and at + 1 + length <= len(stream):
            return True
        at += 1 + length
    return False


def _received(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


def _sent(sock: socket.socket, data: bytes) -> bool:
    """Whether `data` went out: False once the socket is closed (by the other direction,
    the proxy's end, or its peer)."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
