"""Messages as people see them: one message, a page of them, cancelling one, and the event
stream. The one place that says who may see a message: its sender and the admins of its
organization; to anyone else it does not exist (NotFound, never saying why).

Side effects: `cancel` cancels the recipients still queued, deferred or held, and records a
`message.cancelled` event.
"""

from __future__ import annotations

from typing import Protocol

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound
from mailvia.domain.message import State
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import Channels
from mailvia.outbox.records import Event, MessageFilter, MessageView

Page = tuple[list[MessageView], str | None]  # the messages, and the cursor of the next page


class MessageStore(Protocol):
    """What reading messages and events needs from the store."""

    def get_message(self, message_id: str) -> MessageView:
        """Raises NotFound."""
        ...

    def list_messages(self, query: MessageFilter) -> Page: ...

    def cancel_message(self, message_id: str, now: Instant, reason: str) -> MessageView:
        """Raises Conflict while the message is being sent or once it is finished."""
        ...

    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def list_events(
        self, org_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]: ...


def may_see(user: User, message: MessageView) -> bool:
    """A message is its sender's, and its organization's admins'."""
    return message.organization_id == user.organization_id and (
        user.is_admin or message.user_id == user.id
    )


class Messages:
    """Read, list and cancel messages, and read the event stream, as one user."""

    def __init__(self, store: MessageStore, channels: Channels) -> None:
        self._store = store
        self._channels = channels

    def visible(self, actor: User, message_id: str) -> MessageView:
        """The message if the actor may see it; NotFound otherwise."""
        try:
            view = self._store.get_message(message_id)
        except NotFound:
            view = None
        if view is None or not may_see(actor, view):
            where = self._channels.where(actor)
            raise NotFound(f"no message {message_id!r} among those you may see in {where}")
        return view

    def page(
        self,
        actor: User,
        *,
        state: State | None = None,
        channel: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        search: str | None = None,
    ) -> Page:
        """The actor's messages (an admin's: the organization's), newest first, `limit` at a
        time; `channel` by name or id; `search`: a part of the subject or of a recipient's
        address (any case). Raises InvalidInput for a cursor not of this list."""
        channel_id = None
        if channel is not None:
            named = self._store.find_channel(actor.organization_id, channel)
            channel_id = named.id if named is not None else channel
        query = MessageFilter(
            organization_id=actor.organization_id,
            user_id=None if actor.is_admin else actor.id,
            state=state,
            channel_id=channel_id,
            limit=limit,
            cursor=cursor,
            search=" ".join(search.split())[:200] or None if search else None,
        )
        return self._store.list_messages(query)

    def cancel(self, actor: User, message_id: str, now: Instant) -> MessageView:
        """Cancel the recipients still waiting of a message the actor may see: they become
        `cancelled`, their reply says who cancelled them, and a `message.cancelled` event is
        recorded. Raises NotFound, or Conflict while it is being sent or once it is
        finished."""
        view = self.visible(actor, message_id)
        return self._store.cancel_message(view.id, now, f"by {actor.email}")

    def cancel_for_operator(self, message_id: str, now: Instant) -> MessageView:
        """Cancel any message, for the operator (the CLI); as `cancel` otherwise. Raises
        NotFound, Conflict."""
        return self._store.cancel_message(message_id, now, "by the operator")

    def for_operator(self, message_id: str) -> MessageView:
        """Any message, for the operator (the CLI opens the store as its owner). Raises
        NotFound."""
        try:
            return self._store.get_message(message_id)
        except NotFound:
            raise NotFound(
                f"no message {message_id!r} in the outbox (of any organization)"
            ) from None

    def events(
        self, actor: User, *, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]:
        """The organization's events after `cursor`, oldest first. Admins see every event;
        members those about the messages they may see and the channels they may see, so a
        member's page may hold fewer than `limit` while the cursor still advances."""
        events, next_cursor = self._store.list_events(
            actor.organization_id, cursor=cursor, limit=limit
        )
        if actor.is_admin:
            return events, next_cursor
        return self._members_share(actor, events), next_cursor

    def _members_share(self, actor: User, events: list[Event]) -> list[Event]:
        channels = {c.id for c in self._channels.visible(actor)}
        seen: dict[str, bool] = {}
        kept = []
        for event in events:
            message_id = event.data.get("message_id")
            if isinstance(message_id, str):
                if message_id not in seen:
                    seen[message_id] = self._may_see(actor, message_id)
                if seen[message_id]:
                    kept.append(event)
            elif event.data.get("channel_id") in channels:
                kept.append(event)
        return kept

    def _may_see(self, actor: User, message_id: str) -> bool:
        try:
            return may_see(actor, self._store.get_message(message_id))
        except NotFound:
            return False
