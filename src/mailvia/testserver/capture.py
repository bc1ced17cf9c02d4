"""What the test SMTP server keeps: messages in a maildir, `received.jsonl`, `sessions.jsonl`.

Side effects: creates `DIR/tmp`, `DIR/new`, `DIR/cur`; writes message files; appends JSON lines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SessionRecord:
    """One connection's log; mutable while the connection is open."""

    opened_at: float
    tls: bool = False
    auth_user: str | None = None
    closed_at: float | None = None
    commands: list[str] = field(default_factory=list)
    # Commands that arrived before the reply to the command before them (PIPELINING), and
    # "BODY" when message text was already waiting as DATA was read (before its 354).
    early: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape written to `sessions.jsonl` (a copy, safe to keep)."""
        return {
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "tls": self.tls,
            "auth_user": self.auth_user,
            "commands": list(self.commands),
            "early": list(self.early),
        }


class Capture:
    """Writes accepted messages and closed sessions under one maildir, and keeps them in memory.

    Safe to read from other threads (`received`, `sessions`) while the server writes.
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.received_log = maildir / "received.jsonl"
        self.sessions_log = maildir / "sessions.jsonl"
        self._received: list[dict[str, Any]] = []
        self._sessions: list[SessionRecord] = []
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._host = socket.gethostname().replace("/", "_").replace(":", "_") or "localhost"

    @property
    def received(self) -> list[dict[str, Any]]:
        """Each stored message as in `received.jsonl`, plus `"content": bytes`."""
        with self._lock:
            return [dict(entry) for entry in self._received]

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Every connection so far, open ones included (their `closed_at` is None)."""
        with self._lock:
            return [record.as_dict() for record in self._sessions]

    def store(
        self,
        content: bytes,
        mail_from: str,
        rcpt_to: list[str],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Write `content` into the maildir and log it; returns the new file's unique name.

        `extra` adds fields to the log entry (the fake providers' `via` and `account`).
        """
        unique = f"{time.time_ns()}.P{os.getpid()}Q{next(self._serial)}.{self._host}"
        tmp = self.maildir / "tmp" / unique
        final = self.maildir / "new" / unique
        with open(tmp, "wb") as handle:
            handle.write(content)
        os.replace(tmp, final)
        entry: dict[str, Any] = {
            "received_at": time.time(),
            "mail_from": mail_from,
            "rcpt_to": list(rcpt_to),
            "sha256": hashlib.sha256(content).hexdigest(),
            "file": str(final),
            **(extra or {}),
        }
        self._append(self.received_log, entry)
        with self._lock:
            self._received.append({**entry, "content": content})
        return unique

    def open_session(self) -> SessionRecord:
        """Start the log of a new connection."""
        record = SessionRecord(opened_at=time.time())
        with self._lock:
            self._sessions.append(record)
        return record

    def close_session(self, record: SessionRecord) -> None:
        """Mark `record` closed and append it to `sessions.jsonl` (once)."""
        if record.closed_at is not None:
            return
        record.closed_at = time.time()
        self._append(self.sessions_log, record.as_dict())

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
