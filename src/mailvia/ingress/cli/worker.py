"""`mailvia worker`: only the dispatcher, in a process of its own (started by serve, or by
the operator for more processes or machines on PostgreSQL).

The metrics registry is imported inside the function that runs it: every other command
registers this one too, and must not pay for it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TYPE_CHECKING

import click

from mailvia import runtime
from mailvia.ingress.cli import supervise
from mailvia.ingress.cli.long_running import (
    OAUTH_SETTINGS,
    RUN_TIME_MODULES,
    stop_on_signals,
    tell,
    with_worker_id,
)
from mailvia.ingress.cli.root import STORE_SETTINGS, Context, cli, pass_context, settings_options
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.services import Services


async def _work(services: Services, settings: Settings, *, supervised: bool) -> None:
    from mailvia.ingress.metrics import PrometheusMetrics

    stop, done = asyncio.Event(), asyncio.Event()
    stop_on_signals(stop)
    beside = []
    if supervised:  # by serve: see ingress/cli/supervise.py
        supervise.watch_serve(stop, services.dispatcher.wake)
        served = settings.metrics_listen or settings.metrics_token  # serve's /metrics
        if served and isinstance(services.metrics, PrometheusMetrics):
            file = supervise.delivery_metrics_file(settings.data_dir)
            text = services.metrics.delivery_text
            beside.append(asyncio.create_task(supervise.write_delivery_metrics(text, file, done)))
    # Said once SIGTERM is handled: whoever waits for this line may stop the worker at once.
    click.echo(f"worker {services.dispatcher.options.worker} delivering")
    sys.stdout.flush()
    await services.dispatcher.run_forever(time.time, stop)
    done.set()
    await asyncio.gather(*beside)
    await services.aclose()


@cli.command("worker")
@settings_options(
    *STORE_SETTINGS, "worker_id", "shutdown_seconds", "delivery_store", *OAUTH_SETTINGS[1:]
)
@click.option("--supervised", is_flag=True, hidden=True)  # started by serve
@pass_context
def worker(ctx: Context, settings: Settings, supervised: bool) -> None:
    """Run only the dispatcher (more processes, or more machines on PostgreSQL)."""
    if supervised:  # serve's intake first when the CPUs are busy; before the store process
        runtime.lower_priority()
    settings = with_worker_id(settings)
    services = ctx.services(settings, create_key=False)
    if not supervised:  # serve has said them, and tried the operator's apps again
        tell(services.startup_notes)
        services.oauth_apps.revive_operator(time.time())
    # A channel run's claims, records and beats commit in threads beside the busy event loop
    # (as serve's submission port does; the started marks too with DELIVERY_STORE=thread):
    # the same short switch interval.
    runtime.shorten_switch_interval()
    runtime.freeze_heap(RUN_TIME_MODULES)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_work(services, settings, supervised=supervised))
