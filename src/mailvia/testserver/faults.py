"""Fault specs of the test server: parsing `STAGE[*N]=ACTION`, counting, recipient faults.

SMTP stages (`STAGES`) take SMTP actions; the fake providers' HTTP stages (`HTTP_STAGES`) take
`HttpFault`, `Stall` or `Drop`. One faults file may mix both: each side takes only its stages.
Pure values and counters; no I/O except `FaultsFile`, which reads its file when asked.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

STAGES: tuple[str, ...] = (
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "body",
    "data-end",
    "rset",
)
# `rset` is the RSET a client sends before reusing a connection (aiosmtpd's own 250 otherwise).
# `body` is the message text after 354: only `drop` (read a line, hang up) and `stall` (stop
# reading) apply there. `badtls` applies only to `starttls`.
_BODY_ACTIONS = "drop or stall"
# The fake providers' stages (`testserver/fake/`): `refresh` is the token endpoint's
# refresh_token grant, `token` its authorization_code grant.
HTTP_STAGES: tuple[str, ...] = (
    "authorize",
    "token",
    "refresh",
    "userinfo",
    "gmail_send",
    "graph_send",
    "revoke",
)
# A positive reply makes sense only where the server would otherwise send its own 2xx text.
_POSITIVE_OK = frozenset({"greeting", "data-end"})

_SPEC = re.compile(r"^\s*(?P<stage>[a-z_-]+)\s*(?:\*\s*(?P<count>\d+))?\s*=\s*(?P<action>.*?)\s*$")
_REPLY = re.compile(r"^(?P<code>[2-5]\d\d)(?: (?P<rest>.*))?$")
_STALL = re.compile(r"^stall(?::(?P<seconds>\d+(?:\.\d*)?|\.\d+))?$")
_HTTP = re.compile(
    r"^(?:(?P<status>[45]\d\d)\b\s*)?(?P<reason>[A-Za-z_][A-Za-z0-9_.]*)?\s*"
    r"(?:retry-after=(?P<retry>\d+))?$"
)


@dataclass(frozen=True)
class Reply:
    """Send `text`, a whole reply line (`451 4.3.0 Try again later`), instead of the normal one."""

    code: int
    text: str


@dataclass(frozen=True)
class Drop:
    """Close the connection at once without replying."""


@dataclass(frozen=True)
class Stall:
    """Send nothing; with `seconds`, wait that long and then carry on normally."""

    seconds: float | None = None


@dataclass(frozen=True)
class NoReply:
    """Read the command, never answer, close when the client closes."""


@dataclass(frozen=True)
class BadTls:
    """Answer STARTTLS with 220, then send bytes that are not TLS and close: the client's
    handshake fails."""


@dataclass(frozen=True)
class HttpFault:
    """Answer with the provider's own error body for `status` and/or `reason` (at least one).

    `403 rateLimitExceeded`, `429 retry-after=5`, `invalid_grant` (the provider's status for it).
    `retry_after` adds a `Retry-After: N` header.
    """

    status: int | None = None
    reason: str | None = None
    retry_after: int | None = None


Action = Reply | Drop | Stall | NoReply | BadTls | HttpFault


@dataclass(frozen=True)
class FaultRule:
    """One `STAGE[*N]=ACTION`; `limit` None means every matching command."""

    stage: str
    action: Action
    limit: int | None = None


def parse_action(stage: str, text: str) -> Action:
    """Parse the ACTION part of a spec for `stage`. Raises ValueError when it is not valid."""
    text = _unquote(text.strip())
    if stage in HTTP_STAGES:
        return parse_http_action(text)
    if stage == "body":
        if text == "drop":
            return Drop()
        if text == "stall":
            return Stall()
        raise ValueError(f"bad fault action {text!r}: stage body takes {_BODY_ACTIONS}")
    if text == "badtls":
        if stage != "starttls":
            raise ValueError(f"bad fault action {text!r}: only stage starttls takes badtls")
        return BadTls()
    if text == "drop":
        return Drop()
    if text == "noreply":
        return NoReply()
    stall = _STALL.match(text)
    if stall is not None:
        seconds = stall.group("seconds")
        return Stall(float(seconds) if seconds is not None else None)
    reply = _REPLY.match(text)
    if reply is None or "\r" in text or "\n" in text:
        raise ValueError(
            f"bad fault action {text!r}: expected 'CODE ENHANCED text', drop, stall, "
            "stall:SECONDS, noreply or (starttls only) badtls"
        )
    code = int(reply.group("code"))
    if code < 400 and stage not in _POSITIVE_OK:
        raise ValueError(f"bad fault action {text!r}: stage {stage} takes only 4xx/5xx codes")
    if 300 <= code < 400:
        raise ValueError(f"bad fault action {text!r}: 3xx codes are not allowed")
    return Reply(code, text)


def parse_http_action(text: str) -> Action:
    """Parse the ACTION of an HTTP stage: `CODE [REASON] [retry-after=N]`, `REASON`, `drop`,
    `stall`, `stall:SECONDS`. Raises ValueError when it is not valid."""
    if text == "drop":
        return Drop()
    if text == "noreply":
        raise ValueError("bad fault action 'noreply': HTTP stages take stall instead")
    stall = _STALL.match(text)
    if stall is not None:
        seconds = stall.group("seconds")
        return Stall(float(seconds) if seconds is not None else None)
    match = _HTTP.match(text)
    if match is None or not (match.group("status") or match.group("reason")):
        raise ValueError(
            f"bad fault action {text!r}: expected 'CODE [REASON] [retry-after=N]', REASON, "
            "drop, stall or stall:SECONDS"
        )
    status, retry = match.group("status"), match.group("retry")
    return HttpFault(
        status=int(status) if status else None,
        reason=match.group("reason"),
        retry_after=int(retry) if retry is not None else None,
    )


def parse_fault(spec: str) -> FaultRule:
    """Parse `STAGE[*N]=ACTION`. Raises ValueError with the reason when it is not valid."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"bad fault {spec!r}: expected STAGE=ACTION or STAGE*N=ACTION")
    stage = match.group("stage")
    if stage not in STAGES and stage not in HTTP_STAGES:
        known = ", ".join(STAGES + HTTP_STAGES)
        raise ValueError(f"bad fault {spec!r}: unknown stage {stage!r} ({known})")
    count = match.group("count")
    limit = int(count) if count is not None else None
    if limit is not None and limit < 1:
        raise ValueError(f"bad fault {spec!r}: *N needs N >= 1")
    return FaultRule(stage, parse_action(stage, match.group("action")), limit)


def parse_faults(specs: Iterable[str]) -> list[FaultRule]:
    """Parse several specs. Raises ValueError on the first bad one."""
    return [parse_fault(spec) for spec in specs]


def parse_faults_text(text: str) -> list[FaultRule]:
    """Parse a faults file: one spec per line, blank lines and `#` comment lines ignored.

    Raises ValueError naming the line number of the first bad line.
    """
    rules: list[FaultRule] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            rules.append(parse_fault(stripped))
        except ValueError as error:
            raise ValueError(f"line {number}: {error}") from None
    return rules


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


class FaultBook:
    """Rules in order with what is left of each `*N` budget; the first rule with budget wins.

    Changes: `take` spends one unit of the chosen rule's budget. Safe to share between threads.
    """

    def __init__(self, rules: Sequence[FaultRule] = ()) -> None:
        self.rules: tuple[FaultRule, ...] = tuple(rules)
        self._left: list[int | None] = [rule.limit for rule in self.rules]
        self._lock = threading.Lock()

    def take(self, stage: str) -> Action | None:
        """The action for the next command of `stage`, or None to behave normally."""
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.stage != stage:
                    continue
                left = self._left[index]
                if left is None:
                    return rule.action
                if left > 0:
                    self._left[index] = left - 1
                    return rule.action
        return None


class FaultsFile:
    """A faults file, re-read on each `book()` call; budgets last while its content is unchanged.

    A missing file means no faults. A file that does not parse is reported on stderr once per
    content and then contributes no faults.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: bytes | None = None
        self._book = FaultBook()

    def book(self) -> FaultBook:
        """Read the file now and return the rules in force for a new connection."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            content = b""
        digest = hashlib.sha256(content).digest()
        if digest != self._digest:
            self._digest = digest
            try:
                self._book = FaultBook(parse_faults_text(content.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as error:
                print(f"mailvia testserver: ignoring {self.path}: {error}", file=sys.stderr)
                self._book = FaultBook()
        return self._book


RecipientKind = Literal["tempfail", "permfail", "disconnect-in-data", "stall"]
_RECIPIENT_KINDS: tuple[RecipientKind, ...] = (
    "tempfail",
    "permfail",
    "disconnect-in-data",
    "stall",
)
RECIPIENT_REPLIES: dict[str, str] = {
    "tempfail": "451 4.2.0 Temporary failure",
    "permfail": "550 5.1.1 No such user",
}


@dataclass(frozen=True)
class RecipientFault:
    """A fault named by a recipient's local part, e.g. `tempfail+2@x.test`."""

    kind: RecipientKind
    limit: int | None = None


def recipient_fault(address: str) -> RecipientFault | None:
    """The fault that `address` asks for, if any; a numeric `+N` tag limits it to N times."""
    local, at, _domain = address.rpartition("@")
    if not at:
        local = address
    base, plus, tag = local.lower().partition("+")
    for kind in _RECIPIENT_KINDS:
        if base == kind:
            limit = int(tag) if plus and tag.isdigit() else None
            return RecipientFault(kind, limit)
    return None


class RecipientCounter:
    """Counts recipient faults per exact address (case-insensitive) over the server's life."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, address: str) -> RecipientFault | None:
        """The fault to apply to this RCPT of `address`, or None; spends one use of a `+N`."""
        fault = recipient_fault(address)
        if fault is None or fault.limit is None:
            return fault
        key = address.lower()
        with self._lock:
            used = self._seen.get(key, 0)
            if used >= fault.limit:
                return None
            self._seen[key] = used + 1
        return fault
