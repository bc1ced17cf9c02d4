"""The data folder and the SQLite database's files are private to the user running mailvia.

The database holds message bodies and people's addresses, the data folder the master key:
the folder is kept 0700, and the database with its -wal, -shm, -journal and .lock files 0600.
What is found open to the group or to others is made private (and said so); what cannot be
is refused. Side effects: chmod of those paths.
"""

from __future__ import annotations

import stat
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from mailvia.domain.errors import StoreUnavailable

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_SIDES = ("", "-wal", "-shm", "-journal", ".lock")


def sqlite_files(database_url: str) -> list[Path]:
    """The files of a SQLite database at this URL (none for PostgreSQL or in memory)."""
    try:
        url = sa.make_url(database_url)
    except (ArgumentError, ValueError):
        return []
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return []
    if database.startswith("file:") or url.query.get("uri"):
        return []
    return [Path(database + side) for side in _SQLITE_SIDES]


def make_private(data_dir: Path, database_url: str) -> list[str]:
    """Make the data folder 0700 and the database's files 0600 wherever the group or others
    may use them; returns one line for each path changed. Raises StoreUnavailable for a path
    that cannot be made private (another user's)."""
    changed = []
    for path, private in [
        (data_dir, FOLDER_MODE),
        *((f, FILE_MODE) for f in sqlite_files(database_url)),
    ]:
        note = _restrict(path, private)
        if note:
            changed.append(note)
    return changed


def _restrict(path: Path, private: int) -> str | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreUnavailable(f"cannot check the permissions of {path}: {exc.strerror}") from None
    if not mode & 0o077:
        return None
    try:
        path.chmod(mode & private)
    except OSError as exc:
        raise StoreUnavailable(
            f"{path} is readable by others (mode {mode:04o}) and cannot be made private "
            f"({exc.strerror}): make it {private:04o} and start again"
        ) from None
    return f"{path} was readable by others (mode {mode:04o}): now {mode & private:04o}"
