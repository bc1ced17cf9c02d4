"""serve and worker keep what starting made out of later collections (gc.freeze)."""

from __future__ import annotations

import gc
import subprocess
import sys

from mailvia.runtime import freeze_heap


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
        "from mailvia.ingress.cli.long_running import RUN_TIME_MODULES\n"
        "from mailvia.runtime import freeze_heap\n"
        "assert 'httpx' not in sys.modules, 'imported already: the probe proves nothing'\n"
        "freeze_heap(RUN_TIME_MODULES)\n"
        "assert all(name in sys.modules for name in RUN_TIME_MODULES)\n"
        "import httpx, standardwebhooks\n"
        "tracked = {id(o) for o in gc.get_objects()}\n"
        "assert id(httpx.Client) not in tracked and id(standardwebhooks.Webhook) not in tracked\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_the_run_time_modules_cover_every_library_the_transport_imports_on_use() -> None:
    """A library an adapter imports inside a function (so that a short command starts
    fast) is in RUN_TIME_MODULES, or serve and worker would import it on their event loop
    after freezing: a new lazy import that is not listed fails here."""
    import ast
    from pathlib import Path

    import mailvia.transport
    from mailvia.ingress.cli.long_running import RUN_TIME_MODULES

    lazy: set[str] = set()
    for path in Path(mailvia.transport.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        lazy.update(alias.name for alias in inner.names)
                    elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
                        lazy.add(inner.module)
    lazy = {name for name in lazy if not name.startswith("mailvia")}
    assert lazy, "no lazy import found: the scan proves nothing"
    # importing a listed module imports its parents too (`joserfc.jwt` brings `joserfc`)
    listed = {".".join(m.split(".")[:i]) for m in RUN_TIME_MODULES for i in range(1, 8)}
    assert sorted(lazy - listed) == []
