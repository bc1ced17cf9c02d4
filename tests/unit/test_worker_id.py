"""The worker id of serve and worker: a slot under DATA_DIR/workers that the process holds
while it runs, whose id survives a restart and is never shared by two live processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailvia.ingress import worker_id


def test_live_processes_get_distinct_slots_and_a_restart_gets_its_id_back(tmp_path: Path) -> None:
    first = worker_id.claim_worker_id(tmp_path)
    second = worker_id.claim_worker_id(tmp_path)  # another holder of the same folder
    assert first and second and first != second
    assert first.split("-")[-2] == "0" and second.split("-")[-2] == "1"
    os.close(worker_id._held.pop(0))  # the first process dies (the kernel drops its lock)
    assert worker_id.claim_worker_id(tmp_path) == first  # restarted: the same id
    while worker_id._held:
        os.close(worker_id._held.pop())


def test_a_killed_process_releases_its_slot(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from mailvia.ingress import worker_id; "
        "print(worker_id.claim_worker_id(Path(sys.argv[1])), flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        held = child.stdout.readline().strip()
        mine = worker_id.claim_worker_id(tmp_path)
        assert mine != held  # the child holds slot 0
        child.kill()
        child.wait(timeout=10)
        assert worker_id.claim_worker_id(tmp_path) == held  # slot 0 is free again
    finally:
        child.kill()
        while worker_id._held:
            os.close(worker_id._held.pop())


def test_no_slot_in_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert worker_id.claim_worker_id(blocker) is None
