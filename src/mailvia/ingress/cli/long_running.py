"""What serve and worker import before they freeze their start-up heap (mailvia/runtime.py):
the libraries a long run imports on first use, so that they are frozen with the rest.

Side effects: `freeze_heap` imports modules and freezes the garbage collector's heap.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailvia import runtime

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
    """`runtime.freeze_heap` with what a long run imports on first use (by default)."""
    runtime.freeze_heap(modules)
