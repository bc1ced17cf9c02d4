"""What serve and worker do once before their event loop starts: a short GIL switch interval
(their store calls run in threads beside a busy loop), and a frozen start-up heap with the
libraries a long run imports on first use already in it.

Side effects: `freeze_heap` imports modules and freezes the garbage collector's heap.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Sequence

GIL_SWITCH_INTERVAL = 0.001  # seconds (Python's default is 0.005)


# What a long-running process imports on first use (the commands import them lazily, so a
# short command starts fast): imported before the heap is frozen, so that they are frozen with
# it and a first webhook, token exchange or mail API send does not import on the event loop.
RUN_TIME_MODULES = (
    "httpx",
    "authlib.common.urls",
    "authlib.oauth2.rfc6749.parameters",
    "authlib.oauth2.rfc7636",
    "joserfc.jwt",
    "joserfc.jwk",
    "joserfc.errors",
    "standardwebhooks",
)

# And what serve alone runs: its HTTP server, the API and pages it serves, metrics, submission.
SERVE_MODULES = (
    "uvicorn",
    "mailvia.ingress.http",
    "mailvia.web",
    "mailvia.ingress.metrics_http",
    "mailvia.ingress.smtp.server",
)


def freeze_heap(modules: Sequence[str] = RUN_TIME_MODULES) -> None:
    """Import `modules`, then keep what starting made (modules, the app, the tables, the
    wiring) out of every later collection: a full collection then walks what requests and
    runs made, not the whole heap (serve's took ~36 ms every two or three batches of 1,000;
    docs/benchmarks.md, branch `batch`). Called once, just before the event loop starts.
    Cyclic garbage among what was frozen is never freed: what starting made and later
    dropped, bounded and made once."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
