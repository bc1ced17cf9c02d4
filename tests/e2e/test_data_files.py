"""End to end: the data folder and the SQLite database (with its WAL, shared-memory and lock
files) are private to the user running mailvia: a fresh `serve` makes them 0700 and 0600,
and `serve` and `worker` make private, and say so, what they find readable by others."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from support.cli import Cli, poll

pytestmark = pytest.mark.timeout(180)
HTTP = r"^listening http (http://\S+)$"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(data_dir: Path) -> list[Path]:
    """mailvia.db and, while a process has it open, its -wal, -shm and .lock files."""
    return [p for p in data_dir.iterdir() if p.name.startswith("mailvia.db")]


def test_a_fresh_serve_keeps_its_data_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    serve = Cli(data).start("serve", "--http-listen", "127.0.0.1:0")
    try:
        serve.wait_for_line(HTTP)
        files = poll(lambda: len(database_files(data)) >= 4 and database_files(data))
        assert {p.name for p in files} >= {
            "mailvia.db", "mailvia.db-wal", "mailvia.db-shm", "mailvia.db.lock",
        }  # fmt: skip
        assert mode(data) == 0o700
        for path in [*files, data / "master.key", data / "bootstrap.txt"]:
            assert mode(path) == 0o600, f"{path.name}: {oct(mode(path))}"
        assert not any("readable by others" in line for line in serve.lines)
    finally:
        assert serve.stop() == 0, serve.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_database_readable_by_others_is_made_private_at_start(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    cli = Cli(data)
    cli.ok("admin", "create-org", "acme")  # the database, as an older mailvia left it
    data.chmod(0o755)
    for path in database_files(data):
        path.chmod(0o644)
    args = ("serve", "--http-listen", "127.0.0.1:0") if command == "serve" else ("worker",)
    process = cli.start(*args)
    try:
        ready = HTTP if command == "serve" else r"^worker \S+ delivering$"
        process.wait_for_line(ready)
        said = [line for line in process.lines if "readable by others" in line]
        assert any(str(data.resolve()) in line and "0700" in line for line in said), said
        assert any("mailvia.db" in line and "0600" in line for line in said), said
        assert mode(data) == 0o700
        for path in database_files(data):
            assert mode(path) == 0o600, f"{path.name}: {oct(mode(path))}"
    finally:
        assert process.stop() == 0, process.stderr
