"""Submit to delivered on an idle service, and serve's start (issue 15, goal 3): one message
at a time posted to `mailvia serve` (`POST /v1/messages`), each after a pause of 0.3-1.3 s
(random, so a pause never lines up with the dispatcher's 1 s look), timed until the project's
test server (`mailvia testserver`) has logged it; and the time from starting serve until
it prints `listening http`.

Each round starts, per variant, a fresh data folder and test server (tests/support/crashes.py
sets them up with the CLI), serve, the messages, and serve's stop (SIGTERM; timed too). The
variants alternate within a round: this branch with its default DISPATCH (a worker process
on 2 or more CPUs), this branch with DISPATCH=inline, and with `--main-src DIR` (a snapshot:
`git archive main src | tar -x -C DIR`) the code there, serve delivering in its own process.

usage: .venv/bin/python bench/idle.py [--messages 30] [--rounds 3] [--main-src /tmp/snap/src]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO

sys.path.insert(0, str(REPO / "tests"))

from support.crashes import HTTP_LINE, CrashRun
from support.outage import TroubleRun


class Variant(TroubleRun):
    """A run whose serve gets exactly `flags` for DISPATCH (none: the code's default)."""

    def __init__(self, folder: Path, flags: tuple[str, ...], **env: str) -> None:
        super().__init__(folder, **env)
        self.flags = flags

    def dispatch_flags(self) -> tuple[str, ...]:
        return self.flags

    def start_worker(self) -> None:
        return None


def one(folder: Path, flags: tuple[str, ...], env: dict[str, str], n: int) -> dict[str, float]:
    run = Variant(folder, flags, **env)
    try:
        started = time.monotonic()
        CrashRun.start(run)
        assert run.serve is not None
        run.serve.wait_for_line(HTTP_LINE)
        ready = time.monotonic() - started
        time.sleep(2.0)  # a worker process has started and looked once
        took = []
        for i in range(n):
            time.sleep(random.uniform(0.3, 1.3))
            before = run.received()
            sent = time.monotonic()
            assert run.post(f"idle {i}").status_code == 202
            while run.received() <= before:
                time.sleep(0.001)
            took.append(time.monotonic() - sent)
        stopping = time.monotonic()
        code = run.serve.stop(timeout=60)
        stopped = time.monotonic() - stopping
        assert code == 0, run.serve.stderr
    finally:
        run.stop()
    took.sort()
    return {
        "ready_s": ready,
        "p50_ms": 1000 * statistics.median(took),
        "p90_ms": 1000 * took[int(0.9 * (len(took) - 1))],
        "max_ms": 1000 * took[-1],
        "stop_s": stopped,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--main-src", default=None, help="a snapshot of main's src, to compare")
    args = p.parse_args()
    variants: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
        "branch default": ((), {}),
        "branch inline": (("--dispatch", "inline"), {}),
    }
    if args.main_src:
        variants["main"] = ((), {"PYTHONPATH": str(Path(args.main_src).resolve())})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, (flags, env) in variants.items():
            with tempfile.TemporaryDirectory(prefix="mailvia-idle-") as folder:
                got = one(Path(folder), flags, env, args.messages)
            results[name].append(got)
            shown = "  ".join(f"{k} {v:.3f}" for k, v in got.items())
            print(f"round {round_ + 1} {name:15} {shown}", flush=True)
    print("medians of the rounds:")
    for name, rows in results.items():
        shown = "  ".join(f"{k} {statistics.median(r[k] for r in rows):.3f}" for k in rows[0])
        print(f"  {name:15} {shown}")


if __name__ == "__main__":
    main()
