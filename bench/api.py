#!/usr/bin/env python3
"""The HTTP API against the in-process submit, on the same store in the same run, and with
and without a long history of delivered mail.

(Named api.py, not http.py: a script's folder comes first on sys.path, and a bench/http.py
would hide the standard library's `http` package from every bench script.)

For each run and each history size H (`--history 0,1000000`):

1. set-up, not timed: a fresh outbox as bench/relay.py makes it (organization `bench`, a
   domain channel to Postfix's `smtp-sink`), then H delivered messages copied in SQL (each
   with its recipient and its attempt; created over the past `--history-days` days, so the
   last 24 hours hold their share; with a stand-in body of 7 bytes), then `mailvia serve` on
   127.0.0.1 (serve delivers itself unless `--workers W`). The channel is throttled shut
   while the batches are measured.
2. in-process: N messages (the shared 5 KiB message, each `inspect_raw`-ed with its
   envelope, as bench/deliver.py does) through `Submitter.submit` in batches of B, in this
   process, on the same store while serve runs: msg/s.
3. HTTP: the same N messages as `raw` with the same envelope in `POST /v1/messages/batch`
   requests of B from one httpx client keeping its connection (`--client stdlib`: the
   standard library's http.client on its own kept connection, leaner): msg/s, and its ratio to 2;
   also the CPU seconds per message of this process in 2 against serve's in 3 (the "CPU
   ratio": less sensitive to other load on a shared machine than the rates).
4. singles, idle: `--singles` messages submitted one at a time in this process (the store's
   own latency: a commit each), then as many posted one at a time to `POST /v1/messages`
   while nothing is delivered (the HTTP path's latency): p50 and p99, and serve's CPU per
   request.
5. singles while delivering: the throttle is lifted, so serve delivers the 2N messages
   queued by 2 and 3 to the sink; meanwhile one client (keeping its connection) posts
   `--singles` messages one at a time to `POST /v1/messages`: p50, p90, p99 and max
   latency, and how many messages the sink took during that time (delivery must overlap).

Ratios and latencies measured in one run are the figures that matter: the host may be shared.
One JSON line per measurement goes to the results file (bench/benchlib.py's format).

usage: .venv/bin/python bench/api.py [--n 10000] [--batch 1000] [--singles 1000] [--runs 3]
       [--history 0,1000000] [--db sqlite|postgresql] [--workers 0] [--py-spy DIR]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_PG_URL,
    ENV_FROM,
    ENV_TO,
    QUIET,
    Postgres,
    Recorder,
    Sink,
    cpu_snap,
    descendants_cpu,
    exit_on_signal,
    finish_py_spy,
    fmt_range,
    load_message,
    results_file,
    start_py_spy,
    thread_cpu,
    wait_quiet,
)
from relay import Mailvia, Outbox, prepare, start_mailvia, tear_down

DAY = 86400.0


# --------------------------------------------------------------------------- history


def seed_history(url: str, message_id: str, count: int, days: float) -> float:
    """`count` delivered messages like `message_id` (new ids, the same bytes, created over
    the past `days` days), each with its delivered recipient and one attempt, in SQL.
    Returns the seconds it took."""
    import sqlalchemy as sa

    if count <= 0:
        return 0.0
    started = time.perf_counter()
    engine = sa.create_engine(url)
    now = time.time()
    step = days * DAY / count
    cols = "organization_id, user_id, channel_id, mail_from, size, failures, subject"
    # A stand-in body (the size column keeps the real size): a million 6 KB bodies would be
    # 6 GB written twice (WAL, then the checkpoint); the queries measured never read it.
    stub = "'history'::bytea" if engine.dialect.name == "postgresql" else "CAST('history' AS BLOB)"
    try:
        with engine.begin() as conn:
            seed = conn.execute(
                sa.text("SELECT seq FROM messages WHERE id = :id"), {"id": message_id}
            ).scalar_one()
            top = conn.execute(sa.text("SELECT max(seq) FROM messages")).scalar_one()
            if engine.dialect.name == "postgresql":
                series = f"generate_series(1, {count}) AS g(i)"
            else:
                series = (
                    f"(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
                    f"WHERE i < {count}) SELECT i FROM g) AS g"
                )
            at = f"({now - days * DAY} + g.i * {step})"
            # Since 0013 a message's bytes live in message_contents (main's older snapshots
            # kept them in messages.content): seed whichever schema is there.
            apart = sa.inspect(conn).has_table("message_contents")
            content = ("", "") if apart else (", content", f", {stub}")
            conn.exec_driver_sql(
                f"INSERT INTO messages (id, {cols}{content[0]}, state, created_at, expires_at, "
                "next_attempt_at, possible_duplicate, test) "
                f"SELECT 'msg_hist' || g.i, {cols}{content[1]}, 'delivered', {at}, "
                f"{at} + 432000, NULL, false, false FROM messages, {series} WHERE seq = {seed}"
            )
            if apart:
                conn.exec_driver_sql(
                    "INSERT INTO message_contents (message_seq, content) "
                    f"SELECT seq, {stub} FROM messages WHERE seq > {top}"
                )
            conn.exec_driver_sql(
                "INSERT INTO recipients (message_seq, position, address, state, last_code, "
                "last_enhanced, last_text, updated_at) "
                "SELECT m.seq, 0, r.address, 'delivered', 250, '2.0.0', 'ok', m.created_at + 1 "
                f"FROM messages m, recipients r WHERE m.seq > {top} AND r.message_seq = {seed}"
            )
            conn.exec_driver_sql(
                "INSERT INTO attempts (message_seq, channel_id, recipient, at, stage, code, "
                "enhanced, text, outcome, worker) "
                "SELECT m.seq, m.channel_id, r.address, m.created_at + 1, 'data', 250, '2.0.0', "
                "'ok', 'delivered', 'history' "
                f"FROM messages m, recipients r WHERE m.seq > {top} AND r.message_seq = m.seq"
            )
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the parts


def submit_in_process(outbox: Outbox, msg: bytes, n: int, batch: int) -> float:
    """Seconds to submit n messages through Submitter.submit in batches (deliver.py's way)."""
    from mailvia.domain.message import Envelope
    from mailvia.outbox.compose import inspect_raw
    from mailvia.outbox.submit import Submission

    services = outbox.services
    user = services.store.find_user(ENV_FROM)
    started = time.perf_counter()
    for first in range(0, n, batch):
        count = min(batch, n - first)
        subs = [
            Submission(
                inspect_raw(
                    msg,
                    envelope=Envelope(ENV_FROM, (ENV_TO,)),
                    max_size=services.max_message_size,
                )
            )
            for _ in range(count)
        ]
        services.submitter.submit(user, subs, now=time.time())
    return time.perf_counter() - started


def item(msg: bytes) -> dict[str, Any]:
    raw = base64.b64encode(msg).decode("ascii")
    return {"raw": raw, "envelope": {"mail_from": ENV_FROM, "rcpt_to": [ENV_TO]}}


def batch_bodies(msg: bytes, n: int, batch: int) -> dict[int, bytes]:
    """The JSON body of a batch for each batch size n messages take."""
    return {
        size: json.dumps({"messages": [item(msg)] * size}).encode()
        for size in {min(batch, n - first) for first in range(0, n, batch)}
    }


def submit_http(client: Any, msg: bytes, n: int, batch: int) -> float:
    """Seconds to post n messages in batches of `batch` on one kept connection."""
    bodies = batch_bodies(msg, n, batch)
    started = time.perf_counter()
    for first in range(0, n, batch):
        size = min(batch, n - first)
        answer = client.post("/v1/messages/batch", content=bodies[size])
        if answer.status_code != 200:
            raise RuntimeError(f"batch: HTTP {answer.status_code}: {answer.text[:300]}")
        bad = [r for r in answer.json()["data"] if r["status"] != 202]
        if bad:
            raise RuntimeError(f"batch: {len(bad)} refused: {bad[0]}")
    return time.perf_counter() - started


class KeptConnection:
    """`--client stdlib`: the standard library's HTTP/1.1 client on one kept connection, for
    the batches only. It sends each body as given (headers, then the body, no copy) and reads
    each answer whole (its Content-Length); `submit_http` parses and checks every answer as
    with httpx. Leaner than httpx (h11 and its models): the client's own CPU is inside the
    timed rate and on a 2-core host not overlapped with serve's."""

    def __init__(self, port: int, headers: dict[str, str], timeout: float) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = headers

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", path, body=body, headers=self.headers)
        answer = self.connection.getresponse()
        content = answer.read()
        if answer.will_close:
            raise RuntimeError(f"{path}: the server closed the connection")
        return answer.status, content

    def close(self) -> None:
        self.connection.close()


def submit_stdlib(client: KeptConnection, msg: bytes, n: int, batch: int) -> float:
    """`submit_http` with `KeptConnection`: every answer read, parsed and checked."""
    bodies = batch_bodies(msg, n, batch)
    started = time.perf_counter()
    for first in range(0, n, batch):
        size = min(batch, n - first)
        status, content = client.post("/v1/messages/batch", bodies[size])
        if status != 200:
            raise RuntimeError(f"batch: HTTP {status}: {content[:300]!r}")
        data = json.loads(content)["data"]
        bad = [r for r in data if r["status"] != 202]
        if bad or len(data) != size:
            raise RuntimeError(f"batch: {len(bad)} refused of {len(data)}: {bad[:1]}")
    return time.perf_counter() - started


def post_singles(client: Any, msg: bytes, count: int) -> list[float]:
    """Milliseconds per `POST /v1/messages`, one at a time on one kept connection."""
    body = json.dumps(item(msg)).encode()
    took = []
    for _ in range(count):
        t0 = time.perf_counter()
        answer = client.post("/v1/messages", content=body)
        took.append(1000 * (time.perf_counter() - t0))
        if answer.status_code != 202:
            raise RuntimeError(f"single: HTTP {answer.status_code}: {answer.text[:300]}")
    return took


def spy_serve(args: argparse.Namespace, pid: int, label: str) -> list[Any]:
    """py-spy on serve, and with --py-spy-children on each of its child processes (its
    worker process) too, each into its own file."""
    spies = [start_py_spy(args, pid, label)]
    if args.py_spy and args.py_spy_children:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        spies += [start_py_spy(args, int(child), f"{label}-child{child}") for child in children]
    return spies


def per_message(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per message (or request) of each of `thread_cpu`'s parts."""
    return {
        name: round(1000 * (spent - before.get(name, 0.0)) / count, 3)
        for name, spent in after.items()
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- one run


@dataclass
class Series:
    in_process: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    cpu_ratio: list[float] = field(default_factory=list)
    alone_p50: list[float] = field(default_factory=list)
    idle_p50: list[float] = field(default_factory=list)
    single_cpu: list[float] = field(default_factory=list)
    idle_p99: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p90: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    delivered_during: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def one(
    args: argparse.Namespace,
    history: int,
    run_no: int,
    msg: bytes,
    rec: Recorder,
    pg: Postgres | None,
    out: Series,
) -> None:
    import httpx

    scratch = Path(tempfile.mkdtemp(prefix=f"api-{history}-{run_no}-", dir=args.work_dir))
    sink = Sink(scratch, "api", args.timeout * 3 + 600)
    outbox: Outbox | None = None
    run: Mailvia | None = None
    label = f"{args.db}, history {history:,}"
    try:
        outbox = prepare(args, scratch, sink.port, pg)
        services = outbox.services
        [channel] = services.store.list_channels()
        if history:
            from mailvia.domain.message import Envelope
            from mailvia.outbox.compose import inspect_raw
            from mailvia.outbox.submit import Submission

            user = services.store.find_user(ENV_FROM)
            composed = inspect_raw(
                msg, envelope=Envelope(ENV_FROM, (ENV_TO,)), max_size=services.max_message_size
            )
            services.store.set_channel_throttle(channel.id, time.time() + DAY, 0)
            [first] = services.submitter.submit(user, [Submission(composed)], now=time.time())
            secs = seed_history(outbox.db_url, first.id, history - 1, args.history_days)
            print(f"  seeded {history:,} delivered messages in {secs:.1f}s", flush=True)
        services.store.set_channel_throttle(channel.id, time.time() + DAY, 0)  # shut
        run = start_mailvia(args, outbox, scratch)
        headers = {"Authorization": f"Bearer {outbox.token}", "Content-Type": "application/json"}
        base = f"http://127.0.0.1:{run.http_port}"
        with httpx.Client(base_url=base, headers=headers, timeout=args.timeout) as client:
            post_singles(client, msg, 20)  # warm up (imports, caches, the connection)

            busy = wait_quiet()
            c0 = cpu_snap()
            own0 = time.process_time()
            local = submit_in_process(outbox, msg, args.n, args.batch)
            local_cpu = time.process_time() - own0
            rate_local = rec.record(
                c0, cpu_snap(), "mailvia_submit", f"in-process, batches of {args.batch} ({label})",
                run_no, args.n, local, "msg/s", busy_before_pct=busy,
                cpu_ms_per_msg=round(1000 * local_cpu / args.n, 3),
            )  # fmt: skip

            busy = wait_quiet()
            lean = None
            if args.client == "stdlib":  # connected now: serve closes a connection idle 5 s
                lean = KeptConnection(run.http_port, headers, args.timeout)
                status, _ = lean.post("/v1/messages", json.dumps(item(msg)).encode())  # warm
                if status != 202:
                    raise RuntimeError(f"single: HTTP {status}")
            spy = start_py_spy(args, run.procs[0].pid, f"batch-h{history}-run{run_no}")
            c0 = cpu_snap()
            serve0 = run.serve_cpu()
            threads0 = thread_cpu(run.procs[0].pid)
            own0 = time.process_time()
            if lean is not None:
                remote = submit_stdlib(lean, msg, args.n, args.batch)
            else:
                remote = submit_http(client, msg, args.n, args.batch)
            client_cpu = time.process_time() - own0
            if lean is not None:
                lean.close()
            serve_cpu = run.serve_cpu() - serve0
            batch_threads = per_message(threads0, thread_cpu(run.procs[0].pid), args.n)
            finish_py_spy(spy)
            rate_http = rec.record(
                c0, cpu_snap(), "mailvia_api", f"HTTP batches of {args.batch} ({label})",
                run_no, args.n, remote, "msg/s", busy_before_pct=busy,
                serve_cpu_ms_per_msg=round(1000 * serve_cpu / args.n, 3),
                serve_cpu_ms_per_msg_by_thread=batch_threads,
                client_cpu_ms_per_msg=round(1000 * client_cpu / args.n, 3),
            )  # fmt: skip
            ratio = rate_http / rate_local
            cpu_ratio = local_cpu / serve_cpu
            print(
                f"    HTTP / in-process = {ratio:.2f}; CPU per message: serve "
                f"{1000 * serve_cpu / args.n:.3f} ms over HTTP (by thread: {batch_threads}), "
                f"{1000 * local_cpu / args.n:.3f} ms in-process (ratio {cpu_ratio:.2f}); the "
                f"client's ({args.client}) {1000 * client_cpu / args.n:.3f} ms",
                flush=True,
            )

            busy = wait_quiet()
            alone = [1000 * submit_in_process(outbox, msg, 1, 1) for _ in range(args.singles)]
            a50, a99 = pct(alone, 50), pct(alone, 99)
            print(f"    single in-process submit: p50 {a50:.1f} ms, p99 {a99:.1f} ms", flush=True)
            spies = spy_serve(args, run.procs[0].pid, f"idle-h{history}-run{run_no}")
            c0 = cpu_snap()
            serve0 = run.serve_cpu()
            child0 = descendants_cpu(run.procs[0].pid)
            threads0 = thread_cpu(run.procs[0].pid)
            t0 = time.perf_counter()
            idle = post_singles(client, msg, args.singles)
            secs = time.perf_counter() - t0
            for spy in spies:
                finish_py_spy(spy)
            single_cpu = 1000 * (run.serve_cpu() - serve0) / args.singles
            child_cpu = 1000 * (descendants_cpu(run.procs[0].pid) - child0) / args.singles
            by_thread = per_message(threads0, thread_cpu(run.procs[0].pid), args.singles)
            i50, i99 = pct(idle, 50), pct(idle, 99)
            rec.record(
                c0, cpu_snap(), "mailvia_api", f"single POST, not delivering ({label})",
                run_no, args.singles, secs, "req/s", busy_before_pct=busy,
                p50_ms=round(i50, 2), p99_ms=round(i99, 2), max_ms=round(max(idle), 2),
                serve_cpu_ms_per_request=round(single_cpu, 3),
                serve_cpu_ms_per_request_by_thread=by_thread,
                delivery_cpu_ms_per_request=round(child_cpu, 3),
                in_process_p50_ms=round(a50, 2), in_process_p99_ms=round(a99, 2),
            )  # fmt: skip
            print(
                f"    single POST, idle: p50 {i50:.1f} ms, p99 {i99:.1f} ms; serve CPU "
                f"{single_cpu:.2f} ms per request (by thread: {by_thread}); its delivery "
                f"processes' {child_cpu:.2f} ms",
                flush=True,
            )

            busy = wait_quiet()
            before = sink.count()
            services.store.set_channel_throttle(channel.id, None, 0)  # deliver
            post_singles(client, msg, 1)  # wakes the dispatcher
            spies = spy_serve(args, run.procs[0].pid, f"singles-h{history}-run{run_no}")
            c0 = cpu_snap()
            serve0, child0 = run.serve_cpu(), descendants_cpu(run.procs[0].pid)
            t0 = time.perf_counter()
            took = post_singles(client, msg, args.singles)
            secs = time.perf_counter() - t0
            during = sink.count() - before
            serve_cpu = run.serve_cpu() - serve0
            child_cpu = descendants_cpu(run.procs[0].pid) - child0
            for spy in spies:
                finish_py_spy(spy)
            p50, p90, p99 = (pct(took, p) for p in (50, 90, 99))
            rec.record(
                c0, cpu_snap(), "mailvia_api", f"single POST while delivering ({label})",
                run_no, args.singles, secs, "req/s", busy_before_pct=busy,
                p50_ms=round(p50, 2), p90_ms=round(p90, 2), p99_ms=round(p99, 2),
                max_ms=round(max(took), 2), sink_msgs_during=during,
                serve_cpu_pct=round(100 * serve_cpu / secs, 1),
                delivery_cpu_pct=round(100 * child_cpu / secs, 1),
            )  # fmt: skip
            print(
                f"    single POST: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
                f"max {max(took):.1f} ms; the sink took {during:,} messages meanwhile "
                f"({during / secs:,.0f} msg/s); CPU meanwhile: serve "
                f"{100 * serve_cpu / secs:.0f}%, its delivery processes "
                f"{100 * child_cpu / secs:.0f}%",
                flush=True,
            )
        out.in_process.append(rate_local)
        out.http.append(rate_http)
        out.ratio.append(ratio)
        out.cpu_ratio.append(cpu_ratio)
        out.alone_p50.append(a50)
        out.idle_p50.append(i50)
        out.single_cpu.append(single_cpu)
        out.idle_p99.append(i99)
        out.p50.append(p50)
        out.p90.append(p90)
        out.p99.append(p99)
        out.delivered_during.append(during / secs)
    except (RuntimeError, OSError) as exc:
        out.failures.append(str(exc).splitlines()[0])
        print(f"  FAILED: {exc}", flush=True)
        if run is not None and run.died():
            print(run.died(), flush=True)
    finally:
        tear_down(run, sink, outbox, pg, scratch, keep=args.keep)


def table(args: argparse.Namespace, results: dict[int, Series]) -> str:
    lines = [
        f"N = {args.n:,} per part, batches of {args.batch}, {args.singles} single POSTs; "
        f"{args.db}, " + ("serve delivering" if args.workers == 0 else f"{args.workers} worker(s)"),
        "",
        "| history (delivered) | in-process msg/s | HTTP batch msg/s | ratio (goal ≥ 0.8) "
        "| CPU ratio | single in-process p50 ms | single, idle: p50 / p99 ms "
        "| serve CPU ms per single "
        "| single, delivering: p50 ms (≤ 5) | p90 ms | p99 ms (≤ 20) | delivered meanwhile msg/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for history, s in results.items():
        lines.append(
            f"| {history:,} | {fmt_range(s.in_process)} | {fmt_range(s.http)} | "
            f"{fmt_range(s.ratio, 2)} | {fmt_range(s.cpu_ratio, 2)} | "
            f"{fmt_range(s.alone_p50, 1)} | "
            f"{fmt_range(s.idle_p50, 1)} / {fmt_range(s.idle_p99, 1)} | "
            f"{fmt_range(s.single_cpu, 2)} | "
            f"{fmt_range(s.p50, 1)} | {fmt_range(s.p90, 1)} | "
            f"{fmt_range(s.p99, 1)} | {fmt_range(s.delivered_during)} |"
        )
        for failure in s.failures:
            lines.append(f"  FAILED ({history:,}): {failure}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="messages per part (10000)")
    p.add_argument("--batch", type=int, default=1000, help="messages per batch (1000)")
    p.add_argument("--singles", type=int, default=1000, help="single POSTs (1000)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--history", default="0", help="delivered rows first, e.g. 0,1000000")
    p.add_argument("--history-days", type=float, default=30.0)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL)
    p.add_argument("--workers", type=int, default=0, help="0: serve delivers itself")
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--quiet-threshold", type=float, default=QUIET["threshold"])
    p.add_argument("--quiet-wait", type=float, default=20.0)
    p.add_argument("--raw", type=Path, default=None)
    p.add_argument("--py-spy", default=None, help="profile serve into DIR")
    p.add_argument("--py-spy-rate", type=int, default=250)
    p.add_argument("--py-spy-format", default="raw")
    p.add_argument("--py-spy-nonblocking", action="store_true")
    p.add_argument(
        "--py-spy-children", action="store_true", help="profile serve's worker process too"
    )
    p.add_argument(
        "--client",
        choices=["httpx", "stdlib"],
        default="httpx",
        help="the batches' client: httpx (as ever), or http.client on a kept connection",
    )
    p.add_argument("--keep", action="store_true")
    p.add_argument("--work-dir", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    QUIET["threshold"], QUIET["max_wait"] = args.quiet_threshold, args.quiet_wait
    signal.signal(signal.SIGTERM, exit_on_signal)
    rec = Recorder(args.raw or results_file())
    workdir = Path(tempfile.mkdtemp(prefix="api-msg-", dir=args.work_dir))
    msg, source = load_message(workdir)
    print(f"message: {len(msg)} bytes ({source}); results: {rec.raw}; rev {rec.rev}", flush=True)
    pg = Postgres(args.pg_url) if args.db == "postgresql" else None
    if pg is not None and (problem := pg.check()):
        raise SystemExit(f"PostgreSQL: {problem}")
    sizes = [int(x) for x in args.history.split(",")]
    results: dict[int, Series] = {size: Series() for size in sizes}
    try:
        for run_no in range(1, args.runs + 1):
            for size in sizes:
                print(f"run {run_no}, history {size:,}", flush=True)
                one(args, size, run_no, msg, rec, pg, results[size])
    finally:
        if pg is not None:
            pg.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(args, results), flush=True)
    return 1 if any(s.failures for s in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
