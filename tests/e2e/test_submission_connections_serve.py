"""End to end: the submission port of a running `mailvia serve` holds a cap on connections at
once, overall and per client address (SUBMISSION_MAX_CONNECTIONS, ..._PER_CLIENT, small
here). Real sockets from 127.0.0.1 and 127.0.0.2: each connection over a cap is answered
`421 4.7.0 Too many connections` and closed; a closed connection frees its place."""

from __future__ import annotations

import shutil
import smtplib
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from support.cli import Cli, poll, require_console_script
from support.served import Served, serving, tenants

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Served]:
    require_console_script()
    template = tmp_path_factory.mktemp("connections") / "data"
    tokens = tenants(template, "jane")
    shutil.copytree(template, tmp_path / "data")
    cli = Cli(
        tmp_path / "data",
        MAILVIA_DISPATCH="off",
        MAILVIA_SUBMISSION_MAX_CONNECTIONS="8",
        MAILVIA_SUBMISSION_MAX_CONNECTIONS_PER_CLIENT="5",
    )
    with serving(cli, tokens) as served:
        yield served


def connect(served: Served, client: str, stack: ExitStack) -> tuple[socket.socket, bytes]:
    """A connection from `client` (a loopback address) and the first line it is sent."""
    sock = stack.enter_context(
        socket.create_connection(
            ("127.0.0.1", served.submission_port), timeout=10, source_address=(client, 0)
        )
    )
    return sock, sock.makefile("rb").readline()


def refused(sock: socket.socket, line: bytes) -> bool:
    closed = sock.recv(1) == b""  # the server hangs up after its one line
    return line == b"421 4.7.0 Too many connections\r\n" and closed


def test_connections_over_a_cap_are_told_421_and_closed(served: Served) -> None:
    with ExitStack() as stack:
        first = [connect(served, "127.0.0.1", stack) for _ in range(5)]
        assert all(line.startswith(b"220 ") for _, line in first), first
        assert refused(*connect(served, "127.0.0.1", stack))  # over the cap per client

        other = [connect(served, "127.0.0.2", stack) for _ in range(3)]
        assert all(line.startswith(b"220 ") for _, line in other), other
        assert refused(*connect(served, "127.0.0.2", stack))  # over the cap overall

        first[0][0].close()  # frees a place (once the server has seen it go)

        def admitted() -> bool:
            with ExitStack() as attempt:
                return connect(served, "127.0.0.1", attempt)[1].startswith(b"220 ")

        poll(admitted, timeout=30, interval=0.05)

    def session() -> bool:  # once the server has seen them all go, a real session works
        try:
            with served.smtp("jane") as client:
                return client.noop()[0] == 250
        except smtplib.SMTPException:
            return False

    poll(session, timeout=30, interval=0.1)
