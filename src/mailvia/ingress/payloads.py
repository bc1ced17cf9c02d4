"""JSON payloads of domain objects and the use cases' records, shared by the CLI's --json and
the HTTP API: each field named as SURFACE.md names it, never a secret."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mailvia.domain.channel import Channel, Kind
from mailvia.domain.clock import to_iso
from mailvia.domain.message import State
from mailvia.domain.probe import ProbeReport, fix_for, state_hint
from mailvia.domain.replies import Reply
from mailvia.domain.routing import Route

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mailvia.outbox.backlog import Backlog
    from mailvia.outbox.mend import Removal
    from mailvia.outbox.oauth.mailboxes import MailboxStatus
    from mailvia.outbox.receipts import Receipt
    from mailvia.outbox.records import MessageView


def channel_payload(channel: Channel, status: MailboxStatus | None = None) -> dict[str, Any]:
    """A channel as SURFACE.md names its fields; the password and tokens are never shown. An
    OAuth mailbox shows `oauth` with its access token's expiry (`status`; null once its tokens
    are deleted)."""
    pool = channel.kind is Kind.POOL
    return {
        "id": channel.id,
        "name": channel.name,
        "kind": str(channel.kind),
        "preset": channel.preset,
        "host": channel.host,
        "port": channel.port,
        "security": str(channel.security),
        "auth": str(channel.auth),
        # The shared pool's relay login is the operator's (an SES key id, say): not shown.
        "username": None if pool else channel.username,
        "has_password": channel.has_password,
        "ca_pem": channel.ca_pem,
        "scope": str(channel.scope),
        "address": channel.address,
        "domains": list(channel.domains),
        # The pool belongs to no organization's user or team (its reserved one is internal).
        "owner": None
        if pool
        else {"user": channel.owner.user_id}
        if channel.owner.user_id
        else {"team": channel.owner.team_id},
        "budgets": [
            {"count": b.count, "per_seconds": b.per_seconds, "unit": str(b.unit)}
            for b in channel.budgets
        ],
        "max_recipients_per_message": channel.max_recipients_per_message,
        "max_connections": channel.max_connections,
        "state": str(channel.state),
        # The relay's replies are the operator's to read: an organization sees only the state.
        "state_reason": None if pool else channel.state_reason,
        "state_hint": None if pool else state_hint(channel.state_reason, channel),
        "state_changed_at": to_iso(channel.state_changed_at),
        "transport": str(channel.transport),
        "oauth": _oauth_payload(channel, status),
    }


def _oauth_payload(channel: Channel, status: MailboxStatus | None) -> dict[str, Any] | None:
    if channel.oauth is None:
        return None
    return {
        "provider": str(channel.oauth),
        "address": status.address if status else channel.address,
        "expires_at": to_iso(status.expires_at) if status else None,
    }


def reply_payload(
    reply: Reply | None, *, held: bool = False, channel: Channel | None = None
) -> dict[str, Any] | None:
    """A reply with its hint, in the words of `channel`'s kind when known; `held`: the reply
    disconnected the channel (the recipient is held), so a permanent one says what to change
    on the channel, as its `state_hint` says it."""
    if reply is None:
        return None
    said = {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text}
    return said | {"hint": state_hint(str(reply), channel) if held else fix_for(reply, channel)}


# A batch's receipts mostly share their forecast's instant: rendered once, not per receipt.
_forecast_iso = lru_cache(maxsize=256)(to_iso)


def receipt_payload(receipt: Receipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "state": str(receipt.state),
        "channel": {"id": receipt.channel.id, "name": receipt.channel.name},
        "envelope": {
            "mail_from": receipt.envelope.mail_from,
            "rcpt_to": list(receipt.envelope.rcpt_to),
        },
        "forecast": {
            "expected_at": _forecast_iso(receipt.expected_at),
            "queued_ahead": receipt.queued_ahead,
        },
        "warnings": [{"code": w.code, "message": w.message} for w in receipt.warnings],
    }


def message_payloads(messages: Sequence[MessageView], backlog: Backlog) -> list[dict[str, Any]]:
    """`_message_payload` of each, with its channel (replies' hints in the channel's words)."""
    channels = backlog.channels_of(messages)
    return [_message_payload(m, channels.get(m.channel_id)) for m in messages]


def one_message_payload(message: MessageView, backlog: Backlog) -> dict[str, Any]:
    """`message_payloads` of one message."""
    [payload] = message_payloads([message], backlog)
    return payload


def _message_payload(message: MessageView, channel: Channel | None) -> dict[str, Any]:
    """A message as the API and CLI show it; `channel`: its channel, if known
    (`Backlog.channels_of`), so a reply's hint is in the channel's words."""
    held = message.state is State.HELD
    return {
        "id": message.id,
        "state": str(message.state),
        "channel_id": message.channel_id,
        "user_id": message.user_id,
        "envelope": {
            "mail_from": message.envelope.mail_from,
            "rcpt_to": list(message.envelope.rcpt_to),
        },
        "size": message.size,
        "created_at": to_iso(message.created_at),
        "expires_at": to_iso(message.expires_at),
        # Held mail waits for its channel, not a time: no attempt is planned (the column keeps
        # the last attempt's time, which is past).
        "next_attempt_at": None if held else to_iso(message.next_attempt_at),
        "possible_duplicate": message.possible_duplicate,
        "test": message.test,
        "recipients": [
            {
                "address": r.address,
                "state": str(r.state),
                "reply": reply_payload(r.reply, held=r.state is State.HELD, channel=channel),
            }
            for r in message.recipients
        ],
        "attempts": [
            {
                "at": to_iso(a.at),
                "channel_id": a.channel_id,
                "recipient": a.recipient,
                "stage": a.stage,
                "code": a.reply.code,
                "enhanced": a.reply.enhanced,
                "text": a.reply.text,
                "outcome": a.outcome,
            }
            for a in message.attempts
        ],
    }


def route_payload(route: Route) -> dict[str, Any]:
    return {
        "channel": {
            "id": route.channel.id,
            "name": route.channel.name,
            "state": str(route.channel.state),
        }
        if route.channel
        else None,
        "held": route.held,
        "reason": route.reason,
        "steps": [
            {
                "rule": s.rule,
                "channel_id": s.channel_id,
                "channel_name": s.channel_name,
                "verdict": s.verdict,
                "reason": s.reason,
            }
            for s in route.steps
        ],
    }


def report_payload(report: ProbeReport) -> dict[str, Any]:
    """A Test connection report: `ok` and each step's name, ok, detail, reply, hint and
    `skipped` (not tried: `detail` says why; it counts as passed)."""
    return {
        "ok": report.ok,
        "steps": [
            {
                "name": str(s.name),
                "ok": s.ok,
                "detail": s.detail,
                "reply": s.reply,
                "hint": s.hint,
                "skipped": s.skipped,
            }
            for s in report.steps
        ],
    }


def removal_payload(done: Removal) -> dict[str, Any]:
    """A channel's removal with its mail (`DELETE /v1/channels/{id}?mail=...`, `channel remove
    --json`): whether it was removed, what became of its mail, and what was kept and why."""
    return {
        "removed": done.removed,
        "cancelled": done.cancelled,
        "moved": done.moved,
        "kept": [{"id": k.id, "reason": k.reason} for k in done.kept],
    }
