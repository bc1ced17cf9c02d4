"""What every long-running mailvia process (serve, worker, the worker's store process) does
to its interpreter once, before its work starts: a short GIL switch interval, and a frozen
start-up heap. Here, outside the layers, because the store (store/process.py) and the CLI
(ingress/cli/long_running.py) both start such a process and may not import each other.

Side effects: `shorten_switch_interval` sets the interpreter's switch interval;
`lower_priority` raises the process's nice value;
`freeze_heap` imports modules and freezes the garbage collector's heap;
`collect_young_less_often` sets the collector's young threshold.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Sequence

GIL_SWITCH_INTERVAL = 0.001  # seconds (Python's default is 0.005)
# Objects allocated (less those freed) before the young generation is collected (Python's
# default is 700); the older generations keep their thresholds.
YOUNG_THRESHOLD = 10_000
# The nice value serve's delivery process adds to its own (serve's intake keeps its own).
DELIVERY_NICE = 5


def shorten_switch_interval() -> None:
    """A thread woken by a pipe, a socket or the database waits at most 1 ms for the GIL
    (Python's default is 5 ms): these processes make their store calls in threads beside a
    busy event loop (or a busy reader), and each call's many small waits add up."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def freeze_heap(modules: Sequence[str] = ()) -> None:
    """Import `modules`, then keep what starting made (modules, the app, the tables, the
    wiring, the compiled statements) out of every later collection: a full collection then
    walks what requests, runs and calls made, not the whole heap (serve's took ~36 ms every
    two or three batches of 1,000; docs/benchmarks.md, branch `batch`). Called once, just
    before the work starts. Cyclic garbage among what was frozen is never freed: what
    starting made and later dropped, bounded and made once."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()


def collect_young_less_often() -> None:
    """The young generation collected after 10,000 new objects, not 700: a batch of 1,000
    messages makes its models, submissions and receipts as it goes, and at 700 each of ~40
    young collections per batch promoted what was still alive, for the older generations to
    walk again (serve's collector: 4.4-5.2 ms per batch, 2.0 at 10,000, 1 ms a collection;
    the same peak memory; docs/benchmarks.md, branch `batch2`). Most of what a request makes
    is freed by reference counting before the count is reached; cyclic garbage waits longer."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def lower_priority(steps: int = DELIVERY_NICE) -> None:
    """Run this process (and the processes and threads it starts from now on) `steps` nice
    values below its parent: serve's delivery child, so that when the CPUs are all busy a
    request an API or SMTP client is waiting on (serve's intake: its commit is all the caller
    waits for) goes before the delivery of mail already accepted, which only waits longer in
    the outbox. With idle CPUs nothing changes: the scheduler gives the child whatever is free
    (docs/benchmarks.md, branch `perf1`). Where the system refuses, nothing changes."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(steps)
