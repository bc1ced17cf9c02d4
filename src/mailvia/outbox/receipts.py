"""What an intake tells its caller once a message is committed: its `Receipt`, with the
warnings of a held channel and, for a new message, its forecast.

Side effects: none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.message import Envelope, State
from mailvia.outbox.forecasts import Forecast
from mailvia.outbox.ports import NewMessage


@dataclass(frozen=True)
class Warning_:
    code: str
    message: str


@dataclass(frozen=True)
class Receipt:
    """What an intake tells its caller: the message is committed."""

    id: str
    state: State
    channel: Channel
    envelope: Envelope
    created: bool
    expected_at: Instant | None
    warnings: tuple[Warning_, ...] = ()
    queued_ahead: int | None = None


def receipt_of(
    message: NewMessage,
    channel: Channel,
    message_id: str,
    is_new: bool,
    state: State,
    now: Instant,
) -> Receipt:
    """The receipt of a committed message (`is_new`: this commit added it, else an earlier
    one with the same idempotency key, `state` its state now), with a held channel's warning."""
    warnings: list[Warning_] = []
    if state is State.HELD:
        warnings.append(
            Warning_(
                "channel_" + str(channel.state),
                f"{channel.name} is {channel.state}: the message is held until it is "
                "reconnected or resumed",
            )
        )
    return Receipt(
        id=message_id,
        state=state,
        channel=channel,
        envelope=message.envelope,
        created=is_new,
        expected_at=now if state is State.QUEUED else None,
        warnings=tuple(warnings),
    )


def with_forecast(receipt: Receipt, told: Forecast | None) -> Receipt:
    """The receipt of a new message, with its forecast and the batch's bulk warning."""
    if not receipt.created or told is None:
        return receipt
    warnings = receipt.warnings
    if told.bulk is not None:
        warnings += (Warning_("mailbox_bulk", told.bulk),)
    return replace(receipt, expected_at=told.at, queued_ahead=told.ahead, warnings=warnings)
