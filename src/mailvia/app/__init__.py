"""The composition root: the only package that wires concrete parts together.

`wiring.py` builds the service (`build(settings)` opens the store, the vault and the
transport and hands the use cases to the ingresses), with `oauth.py` (the OAuth mailboxes'
parts) and `asgi.py` (the HTTP app and where it listens); `main()` is the console entry point.
This module stays light: `mailvia --help` and the commands that never build the service must
not pay for importing SQLAlchemy, the HTTP clients and the use cases, so `build` and `wire`
import `wiring` when first called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailvia.app.wiring import Wired
    from mailvia.outbox.services import Services
    from mailvia.settings import Settings


def build(settings: Settings, *, create_key: bool = False) -> Services:
    """The services for an ingress (see `wiring.wire`)."""
    from mailvia.app import wiring

    return wiring.build(settings, create_key=create_key)


def wire(settings: Settings, *, create_key: bool = False) -> Wired:
    """Wire the service (see `wiring.wire`)."""
    from mailvia.app import wiring

    return wiring.wire(settings, create_key=create_key)


def main() -> None:
    from mailvia.ingress.cli import run

    # Everything mailvia creates (the database and its WAL, shared-memory and lock files, keys,
    # certificates) is for the user running it alone: message bodies and addresses are there.
    os.umask(0o077)
    run(build)
