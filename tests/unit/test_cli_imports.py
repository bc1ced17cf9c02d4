"""The CLI's start-up: a command imports only what it uses. `mailvia --help` (and every
command's help) needs neither the store, the HTTP clients nor the servers; a command that
builds the service on a database already at the current schema imports neither Alembic
(migration.HEAD is read with plain SQL) nor the HTTP clients it never uses. Each case runs
the console entry point in a fresh interpreter and lists the modules it loaded (not a timed
test: it fails when a heavy import creeps back into a light path, whatever the host's speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Run `main()` with these arguments, then write its exit code and the loaded modules to a file.
PROBE = """
import json, sys
sys.argv = ["mailvia", *json.loads(sys.argv[1])]
from mailvia.app import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
with open({out!r}, "w") as out:
    json.dump({{"code": code, "modules": sorted(sys.modules)}}, out)
"""

# What no help text needs (the heaviest imports of a full build, and the servers).
HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "httpx",
    "authlib",
    "joserfc",
    "aiosmtplib",
    "aiosmtpd",
    "uvicorn",
    "fastapi",
    "starlette",
    "cryptography",
    "argon2",
    "prometheus_client",
    "email_validator",
    "mailvia.store",
    "mailvia.transport",
    "mailvia.outbox.services",
    "mailvia.web",
)


def loaded(tmp_path: Path, *args: str) -> tuple[int, str, set[str]]:
    """The exit code, the output (stdout and stderr) and the modules of `mailvia *args`."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    env["MAILVIA_DATA_DIR"] = str(tmp_path / "data")
    code = PROBE.format(out=str(out))
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = json.loads(out.read_text())
    return found["code"], done.stdout + done.stderr, set(found["modules"])


def heavy_in(modules: set[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("send", "--help"),
        ("route", "explain", "--help"),
        ("channel", "add", "--help"),
        ("serve", "--help"),
        ("migrate", "--help"),
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, output, modules = loaded(tmp_path, *args)
    assert code == 0, output
    assert "Usage: mailvia" in output
    assert heavy_in(modules) == []


def test_a_command_on_a_current_schema_does_not_import_alembic(tmp_path: Path) -> None:
    code, output, modules = loaded(tmp_path, "admin", "create-org", "acme")
    assert code == 0, output
    assert "alembic" in modules  # a fresh database: the migrations ran
    code, output, modules = loaded(
        tmp_path, "route", "explain", "--user", "x@acme.test", "--from", "x@acme.test"
    )
    assert code == 3, output  # no such user: the service was built
    assert "sqlalchemy" in modules
    assert (
        heavy_in(modules, ("alembic", "httpx", "authlib", "joserfc", "uvicorn", "aiosmtpd")) == []
    )
