"""The command line (click): `root.py` has the `mailvia` group, the settings flags and the
error-to-exit-code table; each other module registers one family of commands (`admin`,
`channel`, `send`/`queue`/`message`/`route` in `mail`, `secrets`, the long-running
`serve`/`migrate`/`testserver` in `serve`, and `worker`). `run` is the console entry point.

Every module is imported by every command (click lists them all in `--help`), so each keeps
its top-level imports light: the use cases' types only under TYPE_CHECKING, the servers and
what a command needs at run time inside that command (tests/unit/test_cli_imports.py)."""

from __future__ import annotations

from mailvia.ingress.cli.root import run

__all__ = ["run"]
