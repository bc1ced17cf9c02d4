"""`mailvia serve`, `migrate`, `testserver` (and `worker`: cli/worker.py): the long-running
commands.

uvicorn, the submission server and the metrics registry are imported inside the functions
that run them: every other command registers these commands too, and must not pay for them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailvia import runtime
from mailvia.ingress.cli import supervise
from mailvia.ingress.cli.long_running import (
    OAUTH_SETTINGS,
    RUN_TIME_MODULES,
    SERVE_MODULES,
    stop_on_signals,
    tell,
    with_worker_id,
)
from mailvia.ingress.cli.root import (
    STORE_SETTINGS,
    Context,
    cli,
    fail,
    pass_context,
    settings_options,
)
from mailvia.settings import Listen, Network, Settings

if TYPE_CHECKING:
    import uvicorn

    from mailvia.ingress.smtp.server import SubmissionServer
    from mailvia.outbox.services import Services
    from mailvia.outbox.tenancy import Bootstrap


SUBMISSION_SETTINGS = (
    "submission_listen",
    "submissions_listen",
    "submission_tls_cert",
    "submission_tls_key",
    "trusted_networks",
    "submission_max_connections",
    "submission_max_connections_per_client",
)


SERVE_SETTINGS = (
    *STORE_SETTINGS,
    "http_listen",
    *SUBMISSION_SETTINGS,
    "max_message_size",
    "api_rate_limit",
    "api_recipient_limit",
    "api_batch_max_messages",
    "api_request_max_recipients",
    "worker_id",
    "shutdown_seconds",
    "metrics_listen",
    "dispatch",
    "delivery_store",
    *OAUTH_SETTINGS,
)
# (implicit TLS?, listening socket) for each submission port
SmtpSockets = Sequence[tuple[bool, socket.socket]]


def announce(kind: str, url: str) -> None:
    """One line per listener, flushed, for people and for scripts that wait for it."""
    say(f"listening {kind} {url}")


def say(line: str) -> None:
    """One line on stdout, flushed at once (a supervisor's log shows it as it happens)."""
    click.echo(line)
    sys.stdout.flush()


def write_bootstrap(data_dir: Path, boot: Bootstrap) -> Path:
    path = data_dir / "bootstrap.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"admin: {boot.admin.email}\none-time password: {boot.password}\n"
            f"api token: {boot.token}\n"
        )
    return path


def _bind(listen: Listen) -> socket.socket:
    """A listening socket, or a one-line error (before anything else has started)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio then disables Nagle on every accepted connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {listen}: {exc.strerror or exc}", 1)
    sock.setblocking(False)
    return sock


def _submission_server(services: Services, settings: Settings) -> SubmissionServer:
    """TLS from SUBMISSION_TLS_CERT/KEY or a self-signed certificate; raises InvalidInput,
    or NotFound for an organization in TRUSTED_NETWORKS that does not exist."""
    from mailvia.ingress.smtp.connections import ConnectionLimit
    from mailvia.ingress.smtp.server import SubmissionServer
    from mailvia.ingress.smtp.tls import fingerprint, submission_tls
    from mailvia.outbox.listeners import SubmissionTls

    listens = (settings.submission_listen, settings.submissions_listen)
    context, cert, self_signed = submission_tls(
        cert=settings.submission_tls_cert,
        key=settings.submission_tls_key,
        data_dir=settings.data_dir,
        hosts=tuple(listen.host for listen in listens if listen is not None),
    )
    if self_signed:
        click.echo(f"submission TLS certificate (self-signed): {cert.resolve()}")
    services.listeners.submission_certificate(SubmissionTls(self_signed, fingerprint(cert)))
    connections = ConnectionLimit(
        total=settings.submission_max_connections,
        per_client=settings.submission_max_connections_per_client,
    )
    return SubmissionServer(
        services,
        tls_context=context,
        trusted_networks=settings.trusted_networks,
        connections=connections,
    )


async def _start_submission(
    services: Services, submission: SubmissionServer | None, smtp: SmtpSockets
) -> None:
    if submission is None:
        return
    from mailvia.outbox.listeners import SubmissionPort

    for implicit_tls, smtp_sock in smtp:
        await submission.start(sock=smtp_sock, implicit_tls=implicit_tls)
        host, port = smtp_sock.getsockname()[:2]
        services.listeners.submission_bound(SubmissionPort(host, port, implicit_tls))
        kind, scheme = ("submissions", "smtps") if implicit_tls else ("submission", "smtp")
        announce(kind, f"{scheme}://{Listen(host, port)}")


async def _until(stop: asyncio.Event, server: uvicorn.Server, sock: socket.socket) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task


def _beside(
    services: Services, stop: asyncio.Event, metrics: socket.socket | None
) -> list[asyncio.Task[None]]:
    """The webhook dispatcher and the metrics listener (METRICS_LISTEN), until `stop`."""
    webhooks = services.webhook_dispatcher.run_forever(time.time, stop)
    tasks = [asyncio.create_task(webhooks)]
    if metrics is not None:
        import uvicorn

        from mailvia.ingress.metrics_http import metrics_app  # FastAPI: only when serving

        config = uvicorn.Config(metrics_app(services), log_level="warning", lifespan="off")
        tasks.append(asyncio.create_task(_until(stop, uvicorn.Server(config), metrics)))
        host, port = metrics.getsockname()[:2]
        announce("metrics", f"http://{Listen(host, port)}/metrics")
    return tasks


def proxy_options(proxies: tuple[Network, ...]) -> dict[str, Any]:
    """uvicorn believes X-Forwarded-For / -Proto only from TRUSTED_PROXIES; with none, the
    client is the socket's peer (uvicorn's own default believes 127.0.0.1, which would let
    any local client pose as another address to the per-client sign-in throttle)."""
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": [str(net) for net in proxies]}


async def _serve(
    services: Services,
    sockets: Sockets,
    *,
    submission: SubmissionServer | None = None,
    child: supervise.DeliveryProcess | None = None,
    dispatch_here: bool = True,
    proxies: tuple[Network, ...] = (),
    shutdown_seconds: float = 30.0,
) -> None:
    """Serve until SIGTERM or SIGINT; then stop taking mail first (HTTP stops listening and
    finishes its requests, submission answers 421 4.3.2), let the work in flight finish for
    up to `shutdown_seconds` (the delivery `child` too: ingress/cli/supervise.py), and
    return."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    await _start_submission(services, submission, sockets.smtp)
    server = _http_server(services, sockets.http, proxies, shutdown_seconds)
    tasks = _running(services, server, sockets, stop, dispatch_here=dispatch_here)
    stop_child = asyncio.Event()
    if child is not None:  # after the intakes: mail can come in while it starts
        tasks.append(asyncio.create_task(child.supervise(stop_child)))
    await stop.wait()
    say(f"stopping: taking no new mail; mail being sent has up to {shutdown_seconds:g} s to finish")
    server.should_exit = True
    stop_child.set()  # runs once submission.stop below has closed the listeners
    if submission is not None:
        await submission.stop(grace=shutdown_seconds)
    await _bounded(tasks, shutdown_seconds)
    await services.aclose()
    # True also of mail cut off in a transaction: it stays claimed and the next start sends
    # it again, flagged possible_duplicate (store/give_backs.py).
    say(
        "stopped: HTTP, submission and delivery; nothing is lost: mail not yet delivered "
        "waits in the outbox and leaves at the next start"
    )


def _http_server(
    services: Services, sock: socket.socket, proxies: tuple[Network, ...], shutdown_seconds: float
) -> uvicorn.Server:
    """The API and pages' server on `sock`, finishing its requests for up to
    `shutdown_seconds` once told to exit."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    app = services.http_app(f"http://{Listen(host, port)}")  # redirect URIs: see PUBLIC_URL
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=max(int(shutdown_seconds), 1),
        **proxy_options(proxies),
    )
    return uvicorn.Server(config)


def _running(
    services: Services,
    server: uvicorn.Server,
    sockets: Sockets,
    stop: asyncio.Event,
    *,
    dispatch_here: bool,
) -> list[asyncio.Task[None]]:
    """serve's work, started: HTTP, delivery in this process (DISPATCH=inline) until
    `stop`, and what runs beside them; then says where HTTP listens."""
    tasks = [asyncio.create_task(server.serve(sockets=[sockets.http]))]
    if dispatch_here:
        tasks.append(asyncio.create_task(services.dispatcher.run_forever(time.time, stop)))
    tasks += _beside(services, stop, sockets.metrics)
    host, port = sockets.http.getsockname()[:2]
    announce("http", f"http://{Listen(host, port)}")
    return tasks


async def _bounded(tasks: Sequence[asyncio.Task[None]], seconds: float) -> None:
    """Wait for `tasks` (each bounds itself by `seconds`); a little after, cancel the rest."""
    _, late = await asyncio.wait(tasks, timeout=seconds + 5)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@cli.command("serve")
@settings_options(*SERVE_SETTINGS)
@pass_context
def serve(ctx: Context, settings: Settings) -> None:
    """Run the service: the HTTP API, SMTP submission and delivery (in a worker process of
    its own with 2 or more CPUs; see DISPATCH). SQLite in DATA_DIR by default."""
    sockets = _bind_all(settings)
    mode = supervise.dispatch_mode(settings.dispatch)
    if mode == "inline":
        settings = with_worker_id(settings)
    # DELIVERY_STORE is its worker process's (inline is for one CPU: threads, as before)
    services = ctx.services(replace(settings, delivery_store="thread"), create_key=True)
    tell(services.startup_notes)
    services.oauth_apps.revive_operator(time.time())  # its settings may have been mended
    _bootstrap(services, settings.data_dir)
    submission = _submission_server(services, settings) if sockets.smtp else None
    click.echo(f"data in {settings.data_dir.resolve()}")
    child = _delivery_child(services, settings) if mode == "process" else None
    _say_delivery(mode)
    # The submission port's commits run in a thread beside a busy event loop; each SQLite
    # call gives the GIL up and must get it back, which by default can take 5 ms. 1 ms keeps
    # a commit's many small waits short (measured: about 10% more mail through submission).
    runtime.shorten_switch_interval()
    runtime.freeze_heap((*RUN_TIME_MODULES, *SERVE_MODULES))
    runtime.collect_young_less_often()  # a batch's objects, walked once (runtime.py)
    serving = _serve(
        services,
        sockets,
        submission=submission,
        child=child,
        dispatch_here=mode == "inline",
        proxies=settings.trusted_proxies,
        shutdown_seconds=settings.shutdown_seconds,
    )
    asyncio.run(serving)


@dataclass(frozen=True)
class Sockets:
    """serve's listening sockets: HTTP, the submission ports, metrics (METRICS_LISTEN)."""

    http: socket.socket
    smtp: SmtpSockets
    metrics: socket.socket | None


def _bind_all(settings: Settings) -> Sockets:
    """Every listening socket, bound before anything else starts (a port in use fails at
    once, with one line)."""
    http = _bind(settings.http_listen)
    smtp = [
        (implicit_tls, _bind(listen))
        for implicit_tls, listen in (
            (False, settings.submission_listen),
            (True, settings.submissions_listen),
        )
        if listen is not None
    ]
    metrics = _bind(settings.metrics_listen) if settings.metrics_listen else None
    return Sockets(http, smtp, metrics)


def _bootstrap(services: Services, data_dir: Path) -> None:
    """On the first start: the admin and an API token made, said once and written to
    bootstrap.txt (mode 0600)."""
    boot = services.tenancy.bootstrap(time.time())
    if boot is None:
        return
    path = write_bootstrap(data_dir, boot)
    click.echo(f"created admin {boot.admin.email}; one-time password: {boot.password}")
    click.echo(f"API token (shown once): {boot.token}")
    click.echo(f"both written to {path} (mode 0600)")


def _say_delivery(mode: str) -> None:
    """Where delivery runs, when not in a worker process of serve's (that one says so)."""
    if mode == "off":
        click.echo("dispatch off: run `mailvia worker` to deliver")
    elif mode == "inline":
        click.echo("delivery: in this process")


def _delivery_child(services: Services, settings: Settings) -> supervise.DeliveryProcess:
    """Delivery in a worker process: serve's submissions wake it, its delivery metrics are
    served here (ingress/cli/supervise.py)."""
    from mailvia.ingress.metrics import PrometheusMetrics

    child = supervise.DeliveryProcess(settings)
    services.submitter.on_submit = child.wake
    file = supervise.delivery_metrics_file(settings.data_dir)
    file.unlink(missing_ok=True)  # a previous run's
    if isinstance(services.metrics, PrometheusMetrics):
        services.metrics.deliveries_from(file)
    return child


@cli.command("migrate")
@settings_options(*STORE_SETTINGS)
@pass_context
def migrate(ctx: Context, settings: Settings) -> None:
    """Bring the database schema up to date (serve and worker also do this)."""
    ctx.using(settings, lambda s: None)
    click.echo("the database schema is up to date")


@cli.command(
    "testserver",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def testserver(args: tuple[str, ...]) -> None:
    """A fault-injecting SMTP server, and fake Google and Microsoft, for trying mailvia (--help)."""
    from mailvia.testserver.cli import main

    raise SystemExit(main(list(args)))
