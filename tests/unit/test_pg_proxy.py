"""The test proxy (support/pg_proxy.py) ends quietly when a socket closes under one of its
threads: no thread's exception (a warning, an error under -W error), none left running."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
import sqlalchemy as sa

from support.pg_proxy import PgProxy

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _chatty_server(listener: socket.socket) -> None:
    """Answers every connection with a stream of bytes until it is closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_stream, args=(conn,), daemon=True).start()


def _stream(conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        while True:
            conn.sendall(b"x" * 65536)


def test_clients_gone_while_the_server_still_talks() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=_chatty_server, args=(listener,), daemon=True).start()
    try:
        with PgProxy(f"postgresql://u@127.0.0.1:{port}/db") as proxy:
            through = sa.make_url(proxy.url).port
            for _ in range(20):
                client = socket.create_connection(("127.0.0.1", through))
                client.recv(1)
                client.close()  # the proxy is sending it more
        assert proxy.running() == []
    finally:
        listener.close()
