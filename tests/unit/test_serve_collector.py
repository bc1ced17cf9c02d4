"""serve collects its young generation less often than Python's default (runtime.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from mailvia import runtime


def test_collect_young_less_often_raises_only_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        runtime.collect_young_less_often()
        assert gc.get_threshold() == (runtime.YOUNG_THRESHOLD, *before[1:])
        assert before[0] < runtime.YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)


def test_serve_runs_with_the_raised_young_threshold(tmp_path: Path) -> None:
    """serve itself, started up to where it would run (asyncio.run), in a fresh interpreter:
    its collector's thresholds then, its heap frozen."""
    probe = (
        "import asyncio, gc, sys\n"
        "from mailvia import runtime\n"
        "from mailvia.app import main\n"
        "assert gc.get_threshold()[0] != runtime.YOUNG_THRESHOLD\n"
        "def run(serving):\n"
        "    serving.close()\n"
        "    assert gc.get_threshold()[0] == runtime.YOUNG_THRESHOLD, gc.get_threshold()\n"
        "    assert gc.get_freeze_count() > 0\n"
        "    print('checked')\n"
        "asyncio.run = run\n"
        "sys.argv[0] = 'mailvia'\n"
        "main()\n"
    )
    argv = ["serve", "--data-dir", str(tmp_path), "--http-listen", "127.0.0.1:0"]
    argv += ["--dispatch", "off", "--submission-listen", "", "--submissions-listen", ""]
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "checked" in done.stdout, done.stderr
