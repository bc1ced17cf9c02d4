"""`Remembered`: each key's answer worked out once (a batch's routes, a request's sender
checks, a group's senders).

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Remembered(Generic[K, V]):
    """Each key's value, or the exception working it out raised, worked out once (one batch's
    routes, one group's senders). A MailviaError refuses; any other exception is a fault,
    kept to the items with that key."""

    def __init__(self) -> None:
        self._found: dict[K, V | Exception] = {}
        self._tracebacks: dict[K, TracebackType | None] = {}

    def get(self, key: K, work_out: Callable[[], V]) -> V | Exception:
        if key not in self._found:
            try:
                self._found[key] = work_out()
            except Exception as exc:
                self._found[key] = exc
                self._tracebacks[key] = exc.__traceback__
        return self._found[key]

    def value(self, key: K, work_out: Callable[[], V]) -> V:
        """The key's value, or its exception raised (again: with the traceback of its first
        raise, which each raise of the one remembered exception would otherwise grow by the
        raising frames; a batch of 1,000 refused items kept ~3,000 frames alive)."""
        found = self.get(key, work_out)
        if isinstance(found, Exception):
            raise found.with_traceback(self._tracebacks.get(key))
        return found

    def found(self) -> list[tuple[K, V | Exception]]:
        """Each key worked out so far, with its value or exception."""
        return list(self._found.items())
