"""The worker id of a `serve` or `worker` process when WORKER_ID is not set: one that
survives a restart, so a restarted process takes its previous run's claims back at once.

Ids live in slots `DATA_DIR/workers/N` (N = 0, 1, ...): a process takes the first slot whose
`flock` it gets and keeps the lock while it runs (the kernel drops it when the process dies,
even by SIGKILL). A slot's file holds its id, made once (`HOST-N-RANDOM`); so two processes
on one data folder never share an id, and a restarted one gets the lowest free slot back,
with the same id. Side effects: creates the folder and slot files; holds a lock per process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
from pathlib import Path

log = logging.getLogger(__name__)

SLOTS = 64
_held: list[int] = []  # the slot's file descriptor, open (and locked) while the process runs


def claim_worker_id(data_dir: Path) -> str | None:
    """The id of the first free slot under `data_dir` (locked for this process's life), or
    None when no slot can be had (a read-only folder, every slot taken)."""
    folder = data_dir / "workers"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no worker id slot in %s: %s", folder, exc)
        return None
    for slot in range(SLOTS):
        worker_id = _try_slot(folder / str(slot), slot)
        if worker_id is not None:
            return worker_id
    log.warning("every worker id slot in %s is taken", folder)
    return None


def _try_slot(path: Path, slot: int) -> str | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    if not text:
        host = socket.gethostname().split(".")[0] or "host"
        text = f"{host}-{slot}-{secrets.token_hex(3)}"
        os.pwrite(fd, f"{text}\n".encode(), 0)
        os.fsync(fd)
    _held.append(fd)
    return text
