"""A channel's budget use as meters, and its last 24 hours as a small chart of messages per
hour against its hourly limit: values the templates draw as `<meter>` and inline SVG (sizes
as SVG attributes, colours from app.css classes: the CSP allows no inline styles)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mailvia.domain.channel import Budget, Channel, Unit
from mailvia.domain.shaping import UseLog, window_words
from mailvia.outbox.records import HourOfUse
from mailvia.outbox.services import Services

WIDTH, TOP, BOTTOM = 480.0, 2.0, 100.0  # the chart's viewBox: 480 x 102, bars between
SLOT = WIDTH / 24
HOUR = 3600.0


@dataclass(frozen=True)
class Meter:
    """One budget's use now: `value` of `maximum`, and in words."""

    words: str  # `12 of 30 this minute`, `3,200 of 10,000 recipients in 24 h`
    value: int
    maximum: int

    @property
    def high(self) -> int:
        """Where the meter turns to a warning (80%)."""
        return max(1, int(self.maximum * 0.8))


def meters(budgets: tuple[Budget, ...], log: UseLog, now: float) -> list[Meter]:
    found = []
    for budget in budgets:
        held = log.held(budget, now)
        unit = " recipients" if budget.unit is Unit.RECIPIENTS else ""
        words = f"{held:,} of {budget.count:,}{unit} {window_words(budget.per_seconds)}"
        found.append(Meter(words, min(held, budget.count), budget.count))
    return found


@dataclass(frozen=True)
class Bar:
    """One hour: its slot, the heights of its delivered and other messages, its tooltip."""

    x: float
    width: float
    delivered_y: float
    delivered_height: float
    other_y: float
    other_height: float
    title: str


@dataclass(frozen=True)
class DayChart:
    bars: list[Bar]
    limit: int | None  # messages an hour the tightest budget allows (None: no hourly limit)
    limit_y: float | None  # where its line is drawn (None: no limit, or far above the bars)
    top: int  # messages an hour at the top of the chart
    summary: str
    busy: list[HourOfUse]  # the hours with mail, for the table beside the chart


# The tops a chart may have: 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1,000, ...
_TOPS = sorted({4, *(int(n * 10**k) for k in range(10) for n in (1, 2, 2.5, 5) if n * 10**k >= 5)})


def _round_up(value: float) -> int:
    return next(top for top in _TOPS if top >= value)


def hourly_limit(budgets: tuple[Budget, ...]) -> int | None:
    """Messages an hour the channel's tightest message budget of an hour or less allows (a
    day's budget says nothing about one hour)."""
    rates = [
        int(b.count * HOUR / b.per_seconds)
        for b in budgets
        if b.unit is Unit.MESSAGES and b.per_seconds <= HOUR
    ]
    return min(rates) if rates else None


def hour_words(start: float) -> str:
    begin = datetime.fromtimestamp(start, UTC).strftime("%H:%M")
    end = datetime.fromtimestamp(start + HOUR, UTC).strftime("%H:%M")
    return f"{begin}–{end} UTC"


def day_chart(channel: Channel, hours: list[HourOfUse]) -> DayChart:
    """The chart of these 24 hours against the channel's hourly limit. It is scaled to the
    busiest hour; the limit's line is drawn when it is within twice that (a limit far above
    the mail sent would flatten every bar), and the summary says where it is otherwise."""
    limit = hourly_limit(channel.budgets)
    busiest = max([h.tried for h in hours] + [0])
    near = limit is not None and limit <= 2 * max(busiest, 2)
    top = _round_up(max(busiest, limit if near and limit is not None else 0))
    scale = (BOTTOM - TOP) / top
    bars = []
    for index, hour in enumerate(hours):
        height = max(hour.tried * scale, 2.0) if hour.tried else 0.0
        delivered = height * hour.delivered / hour.tried if hour.tried else 0.0
        bars.append(
            Bar(
                x=index * SLOT + 2,
                width=SLOT - 4,
                delivered_y=BOTTOM - delivered,
                delivered_height=delivered,
                other_y=BOTTOM - height,
                other_height=height - delivered,
                title=f"{hour_words(hour.start)}: {hour.tried:,} sent, "
                f"{hour.delivered:,} delivered",
            )
        )
    limit_y = BOTTOM - limit * scale if near and limit is not None else None
    busy = [h for h in hours if h.tried]
    return DayChart(bars, limit, limit_y, top, _summary(hours, limit, near), busy)


def _summary(hours: list[HourOfUse], limit: int | None, near: bool) -> str:
    tried = sum(h.tried for h in hours)
    delivered = sum(h.delivered for h in hours)
    if limit is None:
        against = " No hourly limit."
    elif near:
        against = f" Its limit: {limit:,} an hour (the dashed line)."
    else:
        against = f" Its limit, {limit:,} an hour, is far above."
    if not tried:
        return "No messages in the last 24 hours." + against
    busiest = max(hours, key=lambda h: h.tried)
    return (
        f"{tried:,} {'message' if tried == 1 else 'messages'} in the last 24 hours, "
        f"{delivered:,} delivered; the busiest hour, {hour_words(busiest.start)}, had "
        f"{busiest.tried:,}.{against}"
    )


@dataclass(frozen=True)
class ChannelUse:
    """What a channel's page and Activity show of its sending: budget meters (none without
    budgets) and the last 24 hours."""

    meters: list[Meter]
    chart: DayChart


def channel_use(services: Services, channel: Channel, now: float) -> ChannelUse:
    log = services.backlog.use(channel, now)
    found = meters(channel.budgets, log, now) if log is not None else []
    return ChannelUse(found, day_chart(channel, services.backlog.last_day(channel, now)))
