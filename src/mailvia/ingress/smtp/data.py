"""DATA's bytes read in the chunks they arrive in, not line by line: the same end of data,
the same limits and the same verdicts as aiosmtpd's own per-line loop (`SMTP.smtp_DATA`,
aiosmtpd 1.4.6), at a fraction of its CPU.

aiosmtpd splits DATA into lines at CRLF only (a bare LF or CR stays inside its line; the
intake then refuses the message, see intake.refuse_bare_line_ends); the data ends at the
first line that is exactly `.` CRLF; a line longer than its limit answers 500, more bytes
than the size limit answer 552 (whichever comes first, line by line), once the end of data
has come; a line's leading dot is removed. `DataScan` finds the same end (the first CRLF `.`
CRLF, with a line end assumed before the first line), and `fault` the same verdict.

`ChunkedData` is aiosmtpd's DATA command with this scan in place of its loop; it takes the
bytes straight from the connection's StreamReader buffer (as aiosmtpd itself does for
STARTTLS), and falls back to aiosmtpd's loop where the reader lacks what it uses.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from aiosmtpd.smtp import MISSING, syntax

log = logging.getLogger("mailvia.submission")

END = b"\r\n.\r\n"
_KEEP = len(END) - 1  # bytes kept after a search: an end may begin in them


class Fault(enum.Enum):
    TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's own replies
    TOO_MUCH = "552 Error: Too much mail data"


class DataScan:
    """Takes DATA's bytes as they arrive (`feed`) until the end of data. Then `body` is the
    message (dot-unstuffed) or None, and `fault` why not. Holds at most about `size_limit`
    bytes: past it the verdict is known and the rest is only searched for the end."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        self._data = bytearray(b"\r\n")  # a line end before the first line
        self._searched = 0
        self._discarding = False
        self.fault: Fault | None = None
        self.body: bytes | None = None
        self.done = False

    def feed(self, chunk: bytes | bytearray) -> int:
        """Take `chunk`; returns -1 if the end of data is not in it, else how many of its
        bytes belong to the data (the rest is the client's next command)."""
        data = self._data
        start = len(data)
        data += chunk
        found = data.find(END, self._searched)
        if found >= 0:
            self._finish(found)
            return found + len(END) - start
        if self._discarding:
            self._data = data[-_KEEP:]
            self._searched = 0
        else:
            self._searched = max(0, len(data) - _KEEP)
            if self._too_much_to_hold():
                self._discard()
        return -1

    def _finish(self, found: int) -> None:
        self.done = True
        if self._discarding:
            self._data = bytearray()
            return
        stuffed = bytes(self._data[2 : found + 2])  # up to and with the last line's CRLF
        self._data = bytearray()
        self.fault = fault(stuffed, self.size_limit, self.line_limit)
        if self.fault is None:
            self.body = unstuff(stuffed)

    def _too_much_to_hold(self) -> bool:
        # Past the size limit by more than a long line: the verdict cannot change any more
        # (the line crossing the limit is whole, or is an overlong one already).
        limit = self.size_limit
        return bool(limit) and len(self._data) - 2 > limit + self.line_limit + 3  # type: ignore[operator]

    def _discard(self) -> None:
        data = self._data
        whole = data.rfind(b"\r\n") + 2  # the complete lines so far (from the virtual one)
        verdict = fault(bytes(data[2:whole]), self.size_limit, self.line_limit)
        self.fault = verdict or Fault.TOO_LONG  # no verdict yet: an overlong line is open
        self._discarding = True
        self._data = data[-_KEEP:]
        self._searched = 0


def fault(stuffed: bytes, size_limit: int | None, line_limit: int) -> Fault | None:
    """aiosmtpd's verdict on DATA's lines (`stuffed` ends with CRLF, or is empty): the first
    line that is too long or takes the count past `size_limit`, in its order of checks."""
    if (not size_limit or len(stuffed) <= size_limit) and _lines_within(stuffed, line_limit - 2):
        return None
    count = 0
    for line in stuffed.split(b"\r\n")[:-1]:
        if len(line) > line_limit:  # its reader gives up on the line before counting it
            return Fault.TOO_LONG
        count += len(line) + 2
        if size_limit and count > size_limit:
            return Fault.TOO_MUCH
        if len(line) + 2 > line_limit:
            return Fault.TOO_LONG
    return None


def _lines_within(stuffed: bytes, longest: int) -> bool:
    """Whether each line of `stuffed` (up to its CRLF) is at most `longest` bytes, without
    splitting it: from each line's start, the last CRLF within `longest` + 2 bytes ends a
    line no longer than that; none there is a longer line (or an unended tail)."""
    start, end = 0, len(stuffed)
    while start < end:
        last = stuffed.rfind(b"\r\n", start, start + longest + 2)
        if last < 0:
            return False
        start = last + 2
    return True


def unstuff(stuffed: bytes) -> bytes:
    """Remove each line's leading dot (RFC 5321 4.5.2)."""
    if stuffed[:1] != b"." and b"\r\n." not in stuffed:
        return stuffed
    return (b"\r\n" + stuffed).replace(b"\r\n.", b"\r\n")[2:]


def _reader_has_seams() -> bool:
    probe = asyncio.StreamReader()
    return isinstance(getattr(probe, "_buffer", None), bytearray) and hasattr(
        probe, "_wait_for_data"
    )


CHUNKED = _reader_has_seams()


async def read_data(reader: asyncio.StreamReader, scan: DataScan) -> None:
    """Feed `scan` what `reader` holds and receives until the end of data; the bytes after
    it (a pipelined command) stay in the reader. Raises as `readuntil` would at EOF."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    while True:
        if buffer:
            used = scan.feed(buffer)
            if used >= 0:
                del buffer[:used]
                return
            buffer.clear()
        error = reader.exception()
        if error is not None:
            raise error
        if reader.at_eof():
            raise asyncio.IncompleteReadError(b"", None)
        await reader._wait_for_data("readuntil")  # type: ignore[attr-defined]


class ChunkedData:
    """aiosmtpd's DATA command (mixed in before `aiosmtpd.smtp.SMTP`) reading with
    `DataScan`: the same replies, in the same order."""

    _decode_data: bool
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    data_size_limit: int | None
    line_length_limit: int
    envelope: Any
    transport: Any

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        smtp: Any = self
        if self._decode_data or not CHUNKED:
            await super().smtp_DATA(arg)  # type: ignore[misc]
            return
        if await smtp.check_helo_needed() or await smtp.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await smtp.push("503 Error: need RCPT command")
            return
        if arg:
            await smtp.push("501 Syntax: DATA")
            return
        await smtp.push("354 End data with <CR><LF>.<CR><LF>")
        scan = DataScan(self.data_size_limit, self.line_length_limit)
        try:
            await read_data(self._reader, scan)
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if scan.fault is not None:
            await smtp.push(scan.fault.value)
            smtp._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = scan.body
        status = await smtp._call_handler_hook("DATA")
        smtp._set_post_data_state()
        await smtp.push("250 OK" if status is MISSING else status)
