"""The data folder and the SQLite files made private (store/files.py) on a real folder: what
is open to others is restricted and reported, PostgreSQL has no files, and a path that
cannot be restricted is refused with one clear line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailvia.domain.errors import StoreUnavailable
from mailvia.store import make_private
from mailvia.store.files import sqlite_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_others_may_read_is_made_private_and_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    for name, bits in (("mailvia.db", 0o644), ("mailvia.db-wal", 0o664), ("mailvia.db-shm", 0o600)):
        (data / name).write_bytes(b"")
        (data / name).chmod(bits)
    notes = make_private(data, f"sqlite:///{data / 'mailvia.db'}")
    assert notes == [
        f"{data} was readable by others (mode 0755): now 0700",
        f"{data / 'mailvia.db'} was readable by others (mode 0644): now 0600",
        f"{data / 'mailvia.db-wal'} was readable by others (mode 0664): now 0600",
    ]
    assert [mode(p) for p in (data, *sorted(data.iterdir()))] == [0o700] + [0o600] * 3
    assert make_private(data, f"sqlite:///{data / 'mailvia.db'}") == []  # now quiet


def test_postgresql_and_in_memory_databases_have_no_files() -> None:
    assert sqlite_files("postgresql+psycopg://u:p@127.0.0.1/mailvia") == []
    assert sqlite_files("sqlite://") == sqlite_files("sqlite:///:memory:") == []
    assert [p.name for p in sqlite_files("sqlite:////srv/m.db")] == [
        "m.db", "m.db-wal", "m.db-shm", "m.db-journal", "m.db.lock",
    ]  # fmt: skip


def test_a_path_that_cannot_be_made_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "mailvia.db"
    database.write_bytes(b"")
    database.chmod(0o644)

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "chmod", refuse)  # as if another user owned it
    with pytest.raises(StoreUnavailable) as refused:
        make_private(tmp_path, f"sqlite:///{database}")
    message = str(refused.value)
    assert "\n" not in message and str(database) in message
    assert "readable by others (mode 0644)" in message and "cannot be made private" in message
