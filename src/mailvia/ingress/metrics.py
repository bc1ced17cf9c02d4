"""Prometheus metrics (prefix `mailvia_`; channels labelled by id, never by name, since names
carry people's addresses): the Metrics port on prometheus-client, and gauges read from the
backlog use case at each scrape. They are served by ingress/metrics_http.py; refused API
submissions are counted by ingress/api/rejections.py.

Each PrometheusMetrics has its own registry, never the process-wide default one, so several
apps in one process (tests) never share or clash. The delivery metrics (the first two, and
the concurrency gauge) are counted where the dispatcher runs: with `serve`'s delivery in a
worker process (DISPATCH=process) that process writes them to a file every second
(`delivery_text`) and serve's registry reads them from it at each scrape (`deliveries_from`);
the child's restart resets them, as a restart of serve does.

    mailvia_deliveries_total{channel,outcome}        recipients' outcomes of SMTP attempts
    mailvia_attempt_seconds{channel}                 SMTP transaction latency (histogram)
    mailvia_intake_rejections_total{intake,reason}   messages an intake refused
    mailvia_webhook_attempts_total{outcome}          POSTs to webhooks: delivered|retry|failed
    mailvia_webhook_attempt_seconds                  webhook POST latency (histogram)
    mailvia_messages{channel,state}                  messages in the outbox (at scrape)
    mailvia_channel_state{channel,state}             1 for a channel's state, 0 for the others
    mailvia_budget_used{channel,unit,window}         what each budget's window holds now
    mailvia_budget_limit{channel,unit,window}        each budget's count
    mailvia_channel_concurrency{channel}             connections a channel may have in a
                                                     transaction at once in this process
                                                     (lowered by a 421, grown back)
    mailvia_store_up                                 whether the scrape could read the store
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from mailvia.domain.channel import ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.errors import MailviaError
from mailvia.outbox.backlog import Backlog, Snapshot

log = logging.getLogger("mailvia.metrics")

SMTP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HTTP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BacklogCollector(Collector):
    """Gauges read at each scrape: messages, channel states, budget use."""

    def __init__(self, backlog: Backlog, clock: Callable[[], Instant]) -> None:
        self.backlog = backlog
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("mailvia_store_up", "Whether this scrape could read the store.")
        try:
            families = self._read(self.backlog.snapshot(None, self.clock()))
        except MailviaError as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            up.add_metric([], 0.0)
            return [up]
        up.add_metric([], 1.0)
        return [up, *families]

    def _read(self, backlog: Snapshot) -> list[Metric]:
        messages = GaugeMetricFamily(
            "mailvia_messages",
            "Messages in the outbox by channel and state.",
            labels=["channel", "state"],
        )
        for channel_id, states in backlog.counts.items():
            for state, count in states.items():
                messages.add_metric([channel_id, str(state)], float(count))
        return [messages, *self._channels(backlog)]

    def _channels(self, backlog: Snapshot) -> list[Metric]:
        states = GaugeMetricFamily(
            "mailvia_channel_state",
            "1 for the state each channel is in, 0 for the others.",
            labels=["channel", "state"],
        )
        budget = ["channel", "unit", "window"]
        used = GaugeMetricFamily(
            "mailvia_budget_used", "What each budget's window holds now.", labels=budget
        )
        limit = GaugeMetricFamily("mailvia_budget_limit", "Each budget's count.", labels=budget)
        for channel in backlog.channels:
            for state in ChannelState:
                states.add_metric([channel.id, str(state)], float(channel.state is state))
            uses = backlog.use.get(channel.id)
            if uses is None:
                continue
            for item in channel.budgets:
                labels = [channel.id, str(item.unit), f"{item.per_seconds:g}"]
                used.add_metric(labels, float(uses.held(item, backlog.at)))
                limit.add_metric(labels, float(item.count))
        return [states, used, limit]


class DeliveryCollector(Collector):
    """The delivery metrics: this process's own, or the ones a worker process wrote to a file
    (none until it has written it)."""

    def __init__(self, own: CollectorRegistry) -> None:
        self.own = own
        self.file: Path | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        if self.file is None:
            return self.own.collect()
        try:
            text = self.file.read_text()
        except OSError:
            return []
        return text_string_to_metric_families(text)


class PrometheusMetrics:
    """The Metrics port on prometheus-client, with its own registry."""

    def __init__(self, backlog: Backlog, *, clock: Callable[[], Instant] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._delivery = CollectorRegistry(auto_describe=False)
        self._deliveries = Counter(
            "mailvia_deliveries",
            "Recipients' outcomes of SMTP attempts, by channel.",
            ["channel", "outcome"],
            registry=self._delivery,
        )
        self._latency = Histogram(
            "mailvia_attempt_seconds",
            "How long each SMTP transaction took, by channel.",
            ["channel"],
            buckets=SMTP_BUCKETS,
            registry=self._delivery,
        )
        self._concurrency = Gauge(
            "mailvia_channel_concurrency",
            "Connections a channel may have in a transaction at once in this process: its"
            " max_connections, lowered after a 421 (service closing) and grown back.",
            ["channel"],
            registry=self._delivery,
        )
        self._delivery_source = DeliveryCollector(self._delivery)
        r.register(self._delivery_source)
        self._rejections = Counter(
            "mailvia_intake_rejections",
            "Messages an intake refused, by intake (api, smtp) and reason.",
            ["intake", "reason"],
            registry=r,
        )
        self._webhooks = Counter(
            "mailvia_webhook_attempts", "POSTs to webhooks by outcome.", ["outcome"], registry=r
        )
        self._webhook_latency = Histogram(
            "mailvia_webhook_attempt_seconds",
            "How long each POST to a webhook took.",
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        r.register(BacklogCollector(backlog, clock))
        self._latencies: dict[str, Histogram] = {}
        self._counters: dict[tuple[str, str], Counter] = {}

    def attempt(self, channel_id: str, seconds: float, outcomes: Sequence[str]) -> None:
        # The labelled children are kept: labels() takes a lock and builds its key on every
        # call, and this runs for every attempt.
        latency = self._latencies.get(channel_id)
        if latency is None:
            latency = self._latencies[channel_id] = self._latency.labels(channel_id)
        latency.observe(seconds)
        for outcome in outcomes:
            counter = self._counters.get((channel_id, outcome))
            if counter is None:
                counter = self._deliveries.labels(channel_id, outcome)
                self._counters[(channel_id, outcome)] = counter
            counter.inc()

    def rejected(self, intake: str, reason: str) -> None:
        self._rejections.labels(intake, reason).inc()

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        self._webhooks.labels(outcome).inc()
        self._webhook_latency.observe(seconds)

    def concurrency(self, channel_id: str, allowed: int) -> None:
        self._concurrency.labels(channel_id).set(allowed)

    def delivery_text(self) -> bytes:
        """This process's delivery metrics, in the text format (what a worker process writes
        for serve)."""
        return generate_latest(self._delivery)

    def deliveries_from(self, file: Path) -> None:
        """Serve the delivery metrics a worker process writes to `file`, not this process's."""
        self._delivery_source.file = file

    def exposition(self) -> bytes:
        """The text format of every metric (reads the backlog)."""
        return generate_latest(self.registry)
