"""serve and worker keep what starting made out of later collections (gc.freeze)."""

from __future__ import annotations

import gc
import subprocess
import sys

from mailvia.ingress.cli.long_running import freeze_heap


class Made:
    pass


def test_freeze_heap_moves_the_objects_made_so_far_out_of_collections() -> None:
    made = Made()
    assert any(o is made for o in gc.get_objects())
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is made for o in gc.get_objects())  # in no generation a collection walks
    finally:
        gc.unfreeze()


def test_freeze_heap_imports_the_run_time_modules_before_it_freezes() -> None:
    """The lazily imported HTTP and token libraries are frozen with the rest, not imported
    later on the event loop (checked in a fresh interpreter: nothing imported them yet)."""
    probe = (
        "import gc, sys\n"
        "from mailvia.ingress.cli.long_running import RUN_TIME_MODULES, freeze_heap\n"
        "assert 'httpx' not in sys.modules, 'imported already: the probe proves nothing'\n"
        "freeze_heap()\n"
        "assert all(name in sys.modules for name in RUN_TIME_MODULES)\n"
        "import httpx, standardwebhooks\n"
        "tracked = {id(o) for o in gc.get_objects()}\n"
        "assert id(httpx.Client) not in tracked and id(standardwebhooks.Webhook) not in tracked\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
