"""The steps of a delivery, as an observer sees them: how "Test connection" runs the very code
that delivers (session.py, the API adapters) and still reports each step with its reply.

Delivery passes no observer (`NO_OBSERVER`); the probe passes one that records `ProbeStep`s.
An observer only watches: it never changes what the code does.
"""

from __future__ import annotations

from typing import Protocol

from mailvia.domain.probe import Step


class Observer(Protocol):
    """Told when a step starts (`detail`: what is known of it so far, e.g. the address
    connected to before a TLS handshake), when it passed (with the server's reply), and of
    the exception that ended the step in progress (before it is mapped to a reply)."""

    def begin(self, step: Step, detail: str = "") -> None: ...
    def passed(self, step: Step, detail: str, reply: str | None = None) -> None: ...
    def failed(self, error: BaseException) -> None: ...


class _Nobody:
    def begin(self, step: Step, detail: str = "") -> None:
        return None

    def passed(self, step: Step, detail: str, reply: str | None = None) -> None:
        return None

    def failed(self, error: BaseException) -> None:
        return None


NO_OBSERVER: Observer = _Nobody()

__all__ = ["NO_OBSERVER", "Observer"]
