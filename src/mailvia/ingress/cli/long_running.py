"""What serve and worker share: the libraries a long run imports on first use, which they
import before they freeze their start-up heap (`runtime.freeze_heap`), so that those are
frozen with the rest; the OAuth settings both take; their worker id, start-up notes and
signal handling.

Side effects: `with_worker_id` may write the data folder's worker id file; `tell` prints;
`stop_on_signals` installs signal handlers on the running loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import replace

import click

from mailvia.settings import Settings

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


# The OAuth settings a flag may give (the client secrets only by environment: secrets).
OAUTH_SETTINGS = (
    "public_url",
    "oauth_google_authorize_url",
    "oauth_google_token_url",
    "oauth_google_revoke_url",
    "oauth_google_userinfo_url",
    "oauth_google_jwks_url",
    "oauth_microsoft_authorize_url",
    "oauth_microsoft_token_url",
    "oauth_microsoft_jwks_url",
    "oauth_google_client_id",
    "oauth_microsoft_client_id",
    "oauth_microsoft_tenant",
)


def tell(notes: Sequence[str]) -> None:
    """What starting fixed (a data folder or database made private), one line each."""
    for note in notes:
        click.echo(f"made private: {note}")


def with_worker_id(settings: Settings) -> Settings:
    """WORKER_ID, or one that survives restarts (see ingress/worker_id.py)."""
    if settings.worker_id:
        return settings
    from mailvia.ingress.worker_id import claim_worker_id

    return replace(settings, worker_id=claim_worker_id(settings.data_dir))


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the run then ends in order, within SHUTDOWN_SECONDS)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
