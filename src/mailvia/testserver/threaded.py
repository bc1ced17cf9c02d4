"""An async server run by its own event loop in a background thread, for synchronous tests.

`InThread(server)` starts `server.start()` on a new loop in a daemon thread and waits until it
listens (or raises what the start raised); `stop()` runs `server.stop()` there and joins.
`ThreadedTestServer` and `ThreadedFakeProviders` are this with their own properties.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Protocol


class Startable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class InThread:
    """Runs `server` in a background thread between `start()` and `stop()`."""

    __test__ = False

    def __init__(self, server: Startable, *, name: str) -> None:
        self._server = server
        self._name = name
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_thread(self, timeout: float) -> None:
        """Start the thread and wait until the server listens. Raises what the start raised."""
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._name}: the thread did not start")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and join its thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self._server.start()
        except BaseException as error:
            self._error = error
            return
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._server.stop()
