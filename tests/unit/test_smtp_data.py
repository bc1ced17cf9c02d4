"""DATA read in chunks (ingress/smtp/data.py) against aiosmtpd's own per-line loop: the same
end of data, the same content and the same replies, whatever the chunks the bytes arrive in.

The pure scan is checked on its own (the end split across feeds at every position, dot-
unstuffing, the limits, a bare LF before the dot), then both readers run side by side on
loopback: aiosmtpd's `SMTP` and the same class with `ChunkedData` mixed in, each sent the
same bytes in the same random pieces, with a command pipelined after the end."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailvia.ingress.smtp.data import CHUNKED, DataScan, Fault, fault, unstuff

LINE = 1001  # aiosmtpd's line_length_limit


def scan_all(
    stream: bytes, pieces: list[int], size_limit: int | None = 10_000
) -> tuple[DataScan, bytes]:
    """Feed `stream` cut at `pieces`; returns the scan and the bytes after the end."""
    scan = DataScan(size_limit, LINE)
    cuts = [0, *sorted(pieces), len(stream)]
    for a, b in itertools.pairwise(cuts):
        used = scan.feed(stream[a:b])
        if used >= 0:
            return scan, stream[a + used :]
    return scan, b""


def test_the_end_split_across_reads_at_every_position() -> None:
    stream = b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    for cut in range(1, len(stream)):
        for second in range(cut, len(stream)):
            scan, rest = scan_all(stream, [cut, second])
            assert scan.done and scan.fault is None
            assert scan.body == b"Subject: x\r\n\r\nbody\r\n"
            assert rest == b"QUIT\r\n"


def test_an_empty_message_and_a_dot_first() -> None:
    scan, rest = scan_all(b".\r\nNOOP\r\n", [1])
    assert scan.body == b"" and rest == b"NOOP\r\n"
    scan, _ = scan_all(b"..\r\n.\r\n", [])
    assert scan.body == b".\r\n"


def test_dot_unstuffing_removes_one_leading_dot_of_each_line() -> None:
    assert unstuff(b"..a\r\n.\r\n...b\r\nc.d\r\n") == b".a\r\n\r\n..b\r\nc.d\r\n"
    scan, _ = scan_all(b"a\r\n..\r\n.b\r\n.\r\n", [4, 5])
    assert scan.body == b"a\r\n.\r\nb\r\n"


@pytest.mark.parametrize("smuggled", [b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\n", b"\r\n.\r"])
def test_a_bare_line_end_around_a_dot_is_not_the_end(smuggled: bytes) -> None:
    stream = b"a" + smuggled + b"MAIL FROM:<x@y>\r\n.\r\n"
    scan, rest = scan_all(stream, [2])
    assert scan.body == unstuff(b"a" + smuggled + b"MAIL FROM:<x@y>\r\n") and rest == b""


def test_the_limits_and_which_comes_first() -> None:
    assert fault(b"a" * 98 + b"\r\n", 100, LINE) is None
    assert fault(b"a" * 99 + b"\r\n", 100, LINE) is Fault.TOO_MUCH
    assert fault(b"a" * 999 + b"\r\n", None, LINE) is None
    assert fault(b"a" * 1000 + b"\r\n", None, LINE) is Fault.TOO_LONG
    assert fault(b"a" * 20 + b"\r\n" + b"b" * 1500 + b"\r\n", 10, LINE) is Fault.TOO_MUCH
    assert fault(b"a\r\n" + b"b" * 1500 + b"\r\n", 10, LINE) is Fault.TOO_LONG
    assert fault(b"b" * 1500 + b"\r\n" + b"a" * 20 + b"\r\n", 10, LINE) is Fault.TOO_LONG
    # a line of 1002 or 1003 bytes is read whole, counted, then found too long
    assert fault(b"c" * 1000 + b"\r\n", 10, LINE) is Fault.TOO_MUCH
    assert fault(b"c" * 1002 + b"\r\n", 10, LINE) is Fault.TOO_LONG


def test_an_oversize_message_is_not_held_whole() -> None:
    scan = DataScan(1000, LINE)
    for _ in range(1000):
        assert scan.feed(b"x" * 60 + b"\r\n") == -1
    assert len(scan._data) < 5000
    assert scan.feed(b".\r\nRSET\r\n") == 3
    assert scan.fault is Fault.TOO_MUCH and scan.body is None
    long_line = DataScan(100_000, LINE)
    long_line.feed(b"ok\r\n" + b"y" * 200_000)
    long_line.feed(b"\r\n.\r\n")
    assert long_line.fault is Fault.TOO_LONG


# -- side by side with aiosmtpd's own loop ---------------------------------------------------


class Chunked(SMTP):  # type: ignore[misc]
    pass


if CHUNKED:
    from mailvia.ingress.smtp.data import ChunkedData

    class Chunked(ChunkedData, SMTP):  # type: ignore[misc,no-redef]
        pass


class Keep:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(envelope.original_content)
        return f"250 got {len(envelope.original_content)}"


async def serve(kind: type[SMTP], handler: Keep, limit: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: kind(handler, data_size_limit=limit, loop=loop), "127.0.0.1", 0
    )


@pytest.fixture
async def both() -> AsyncIterator[list[tuple[asyncio.Server, Keep]]]:
    servers = []
    for kind in (SMTP, Chunked):
        keep = Keep()
        servers.append((await serve(kind, keep, 3000), keep))
    yield servers
    for server, _ in servers:
        server.close()
        await server.wait_closed()


async def exchange(server: asyncio.Server, data: bytes, pieces: list[int]) -> list[bytes]:
    """EHLO, MAIL, RCPT, DATA, then `data` cut at `pieces` (then NOOP pipelined after the
    data's own end, and QUIT): every reply line from the 354 on."""
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    for command in (b"EHLO c\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n"):
        writer.write(command)
        while (line := await reader.readline())[3:4] == b"-":
            pass
    writer.write(b"DATA\r\n")
    replies = [await reader.readline()]
    cuts = [0, *sorted(pieces), len(data)]
    for a, b in itertools.pairwise(cuts):
        writer.write(data[a:b])
        await writer.drain()
        await asyncio.sleep(0.001)
    writer.write(b"NOOP\r\nQUIT\r\n")
    while line := await reader.readline():
        replies.append(line)
        if line.startswith(b"221"):
            break
    writer.close()
    return replies


def streams(rng: random.Random) -> list[bytes]:
    """Bodies with the awkward parts: stuffed dots, bare LF/CR near dots, long lines, sizes
    around the limit (3000), ends with a command pipelined behind them."""
    parts = [
        b"x\r\n",
        b".\r\n",
        b"..\r\n",
        b".x\r\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"a" * 997 + b"\r\n",
        b"a" * 1000 + b"\r\n",
        b"a" * 1001 + b"\r\n",
        b"a" * 1002 + b"\r\n",
        b"a" * 1004 + b"\r\n",
        b"b" * 1500,
        b"Subject: t\r\n",
        b"z" * 300 + b"\r\n",
    ]
    out = [
        b".\r\n",
        b"\r\n.\r\n",
        b"..\r\n.\r\n",
        b"a" * 2995 + b"\r\n.\r\n",
        b"a" * 2996 + b"\r\n.\r\n",
        b"a" * 1500 + b"\r\n" + b"b" * 1400 + b"\r\n.\r\n",
        b"a" * 998 + b"\r\n" + b"c" * 998 + b"\r\n" + b"d" * 1002 + b"\r\n.\r\n",  # 500 first
        b"a" * 998 + b"\r\n" + b"c" * 998 + b"\r\n" + b"d" * 1001 + b"\r\n.\r\n",  # 552 first
    ]
    for _ in range(100):
        body = b"".join(rng.choice(parts) for _ in range(rng.randint(1, 14)))
        out.append(body + b"\r\n.\r\n")
    return out


async def test_chunked_data_answers_as_aiosmtpds_loop_does(
    both: list[tuple[asyncio.Server, Keep]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CHUNKED, "asyncio.StreamReader changed: ChunkedData falls back to aiosmtpd's loop"
    from mailvia.ingress.smtp.data import DataScan

    fed = [0]  # the chunked reader ran for our server, and only for ours
    feed = DataScan.feed

    def counted(scan: DataScan, chunk: bytes | bytearray) -> int:
        fed[0] += 1
        return feed(scan, chunk)

    monkeypatch.setattr(DataScan, "feed", counted)
    rng = random.Random(1509)
    (theirs, their_keep), (ours, our_keep) = both
    for data in streams(rng):
        pieces = rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 4)))
        before = fed[0]
        expected = await exchange(theirs, data, pieces)
        assert fed[0] == before
        assert await exchange(ours, data, pieces) == expected, data
        assert fed[0] > before
        assert our_keep.contents == their_keep.contents
