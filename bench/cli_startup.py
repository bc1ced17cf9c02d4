"""The CLI's start-up: each command's wall and CPU time (user+sys of the process), median of N
runs, this tree against a snapshot of another (`--base DIR/src`), alternated A B A B; and with
`--imports`, the sum of `python -X importtime`'s self times and the heavy packages loaded.

    mkdir -p /tmp/base && git archive main src | tar -x -C /tmp/base
    .venv/bin/python bench/cli_startup.py --base /tmp/base/src --n 10
    .venv/bin/python bench/cli_startup.py --base /tmp/base/src --n 10 --imports

Each tree runs the console script's body (`from mailvia.app import main`) with PYTHONPATH
set to it, on one data folder set up by the base tree (organization, team, user)."""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
MAIN = "import sys; from mailvia.app import main; sys.argv[0] = 'mailvia'; main()"
SETUP = (
    ("admin", "create-org", "acme"),
    ("admin", "add-domain", "acme", "acme.test"),
    ("admin", "create-team", "sales", "--org", "acme"),
    ("admin", "create-user", "jane@acme.test", "--org", "acme", "--team", "sales"),
)
COMMANDS = {
    "--help": ("--help",),
    "send --help": ("send", "--help"),
    "route explain": ("route", "explain", "--user", "jane@acme.test", "--from", "jane@acme.test"),
    "queue": ("queue",),
}
HEAVY = {
    "sqlalchemy", "alembic", "mako", "httpx", "authlib", "joserfc", "uvicorn", "fastapi",
    "starlette", "aiosmtpd", "aiosmtplib", "cryptography", "argon2", "prometheus_client",
    "email_validator", "rich", "pygments",
}  # fmt: skip


def run(
    src: str, env: dict[str, str], args: tuple[str, ...], *flags: str
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", MAIN, *args],
        env={**env, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done


def imports(stderr: str) -> tuple[float, int, set[str]]:
    rows = [
        re.match(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", line) for line in stderr.splitlines()
    ]
    found = [row for row in rows if row]
    return sum(int(r[1]) for r in found) / 1000, len(found), {r[2].split(".")[0] for r in found}


def report(
    name: str,
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
    seen: dict[str, object],
    *,
    imports_only: bool,
) -> None:
    wall = {t: statistics.median(walls[t]) * 1000 for t in walls}
    cpu = {t: statistics.median(cpus[t]) for t in cpus}
    if imports_only:
        print(f"{name:14s} imports base {wall['base']:5.0f} ms ({cpu['base']:.0f} modules)", end="")
        print(f"  branch {wall['branch']:5.0f} ms ({cpu['branch']:.0f} modules)")
        print(f"{'':14s} heavy in base {seen['base']}\n{'':14s} heavy in branch {seen['branch']}")
        return
    same = "same output and exit code" if seen["base"] == seen["branch"] else "OUTPUT DIFFERS"
    print(f"{name:14s} wall base {wall['base']:5.0f} ms  branch {wall['branch']:5.0f} ms", end="")
    print(
        f"   cpu base {cpu['base'] * 1000:5.0f} ms  branch {cpu['branch'] * 1000:5.0f} ms   {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the other tree's src folder")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--imports", action="store_true")
    options = parser.parse_args()
    trees = {"base": options.base, "branch": SRC}
    data = tempfile.mkdtemp(prefix="cli-startup-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVIA_")}
    env["MAILVIA_DATA_DIR"] = data
    try:
        for args in SETUP:
            run(options.base, env, args)
        print(f"n={options.n} load {os.getloadavg()}")
        for name, args in COMMANDS.items():
            walls: dict[str, list[float]] = {t: [] for t in trees}
            cpus: dict[str, list[float]] = {t: [] for t in trees}
            seen: dict[str, object] = {}
            flags = ("-X", "importtime") if options.imports else ()
            for _ in range(options.n):
                for tree, src in trees.items():
                    wall, cpu, done = run(src, env, args, *flags)
                    if options.imports:
                        total, count, tops = imports(done.stderr)
                        walls[tree].append(total / 1000)
                        cpus[tree].append(count)
                        seen[tree] = sorted(tops & HEAVY)
                    else:
                        walls[tree].append(wall)
                        cpus[tree].append(cpu)
                        seen[tree] = (done.returncode, done.stdout, done.stderr)
            report(name, walls, cpus, seen, imports_only=options.imports)
        print(f"load {os.getloadavg()}")
    finally:
        shutil.rmtree(data)


if __name__ == "__main__":
    main()
