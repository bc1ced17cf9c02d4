"""Where this process takes mail in, as the pages tell people who set up a mail client or an
add-in: the SMTP submission ports and their TLS. `serve` tells it once each port is bound;
a process that listens for no submission (a worker, the CLI) has none to tell."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubmissionPort:
    """One submission port: STARTTLS (`implicit_tls` False, usually 587) or TLS from the first
    byte (True, usually 465)."""

    host: str
    port: int
    implicit_tls: bool


@dataclass(frozen=True)
class SubmissionTls:
    """The submission ports' certificate: made by mailvia itself (`self_signed`: mail clients
    ask their user to trust it, and show this SHA-256 fingerprint to compare) or the
    operator's (SUBMISSION_TLS_CERT)."""

    self_signed: bool
    fingerprint: str  # SHA-256 of the certificate, as AB:CD:... (what mail clients show)


class Listeners:
    """What this process listens on for submission, told by `serve` as it binds."""

    def __init__(self) -> None:
        self._ports: list[SubmissionPort] = []
        self._tls: SubmissionTls | None = None

    def submission_bound(self, port: SubmissionPort) -> None:
        self._ports.append(port)

    def submission_certificate(self, tls: SubmissionTls) -> None:
        self._tls = tls

    def submission(self) -> tuple[tuple[SubmissionPort, ...], SubmissionTls | None]:
        """The submission ports (none: this process takes no mail over SMTP) and their TLS."""
        return tuple(self._ports), self._tls
