"""The API's JSON shapes (pydantic): message bodies and receipts, messages, routes, the
organization, events and health. Channel shapes are in `channel_schemas.py`.

Inputs refuse unknown fields, coerce nothing (a number is not a string), and refuse NUL and
lone surrogates anywhere; the message fields' own rules (addresses, line breaks, sizes) are
checked by `outbox.compose`, like at every intake. Lengths are capped so no field can make
header folding slow.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    with_config,
)
from typing_extensions import TypedDict

from mailvia.domain.message import State
from mailvia.domain.tenancy import Fallback
from mailvia.ingress.api.errors import Problem


def clean_text(value: str) -> str:
    if "\0" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    return value


def one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("line breaks are not allowed")
    return clean_text(value)


Text = Annotated[StrictStr, AfterValidator(clean_text)]
Line = Annotated[StrictStr, AfterValidator(one_line)]
Mailbox = Annotated[Text, Field(max_length=998, examples=["Jane Doe <jane@acme.example>"])]
HeaderText = Annotated[Text, Field(max_length=998)]
HeaderName = Annotated[Line, Field(min_length=1, max_length=76)]
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Address = Annotated[Text, Field(max_length=998)]
Recipients = Annotated[list[Mailbox], Field(max_length=1000)]
RcptTo = Annotated[list[Address], Field(min_length=1, max_length=1000)]
Raw = Annotated[StrictStr, Field(description="The whole message, base64.")]
_M = TypeVar("_M")
Messages = Annotated[list[_M], Field(min_length=1, max_length=1000)]  # a batch's


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvelopeIn(Input):
    """The SMTP envelope of a raw message (default: from its From, To, Cc and Bcc)."""

    mail_from: Address = Field(description="The return path; empty for a null sender.")
    rcpt_to: RcptTo


class MessageIn(Input):
    """A message as fields (`from`, `to`, ... with `text` and/or `html`), or as `raw`
    base64 RFC 5322 bytes with an optional `envelope`; not both."""

    from_: Mailbox | None = Field(None, alias="from", description="Required without `raw`.")
    to: Recipients = Field(default_factory=list)
    cc: Recipients = Field(default_factory=list)
    bcc: Recipients = Field(default_factory=list)
    reply_to: Mailbox | None = None
    subject: HeaderText = ""
    text: Text | None = None
    html: Text | None = None
    headers: dict[HeaderName, HeaderText] = Field(
        default_factory=dict,
        max_length=50,
        description="Extra header fields (not From, To, Subject, ...).",
    )
    raw: Raw | None = None
    envelope: EnvelopeIn | None = None


class BatchIn(Input):
    messages: Messages[MessageIn]


# A batch of raw messages (each `raw`, with or without an `envelope`, nothing else) as the
# models above take it, by their own types, read as dicts without building models
# (`raw_batch.py`): what these take, `BatchIn` takes.
@with_config(ConfigDict(extra="forbid"))
class EnvelopeFields(TypedDict):
    mail_from: Address
    rcpt_to: RcptTo


@with_config(ConfigDict(extra="forbid"))
class RawMessageFields(TypedDict):
    raw: Raw
    envelope: NotRequired[EnvelopeFields | None]


@with_config(ConfigDict(extra="forbid"))
class RawBatchFields(TypedDict):
    messages: Messages[RawMessageFields]


class ChannelRef(BaseModel):
    id: str
    name: str


class EnvelopeOut(BaseModel):
    mail_from: str
    rcpt_to: list[str]


class Forecast(BaseModel):
    expected_at: Timestamp | None = Field(description="When delivery is first tried.")
    queued_ahead: int | None = Field(
        description=(
            "How many of the channel's messages were waiting (queued, deferred or sending) "
            "ahead of this one, counted at most a second earlier; null for an "
            "Idempotency-Key replay."
        )
    )


class WarningOut(BaseModel):
    code: str
    message: str


class Receipt(BaseModel):
    """The message is committed to the outbox."""

    id: str
    state: State
    channel: ChannelRef
    envelope: EnvelopeOut
    forecast: Forecast
    warnings: list[WarningOut]


class BatchResult(BaseModel):
    """One message of a batch: `receipt` (status 202, or 200 when an Idempotency-Key replays
    it) or `problem` (its error; nothing stored for it)."""

    status: int
    receipt: Receipt | None = None
    problem: Problem | None = None


class BatchOut(BaseModel):
    data: list[BatchResult]


class Reply(BaseModel):
    code: int
    enhanced: str | None
    text: str
    hint: str | None = Field(
        default=None,
        description="What to change when no retry mends it: the setting that lets mailvia "
        "reach a private host, or the sign-in the channel needs.",
    )


class RecipientOut(BaseModel):
    address: str
    state: State
    reply: Reply | None = Field(description="The last reply about this recipient.")


class AttemptOut(BaseModel):
    at: Timestamp
    channel_id: str
    recipient: str
    stage: str
    code: int
    enhanced: str | None
    text: str
    outcome: str


class MessageOut(BaseModel):
    id: str
    state: State
    channel_id: str
    user_id: str
    envelope: EnvelopeOut
    size: int
    created_at: Timestamp
    expires_at: Timestamp
    next_attempt_at: Timestamp | None = Field(
        description="When the next attempt is due (queued, deferred); null when none is "
        "planned: held mail waits for its channel (reconnect or resume), not for a time."
    )
    possible_duplicate: bool
    test: bool = Field(description="A test message sent by Test connection.")
    recipients: list[RecipientOut]
    attempts: list[AttemptOut] = Field(description="Empty in lists; filled for one message.")


class MessagePage(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class RouteChannel(BaseModel):
    id: str
    name: str
    state: str


class RouteStep(BaseModel):
    rule: str
    channel_id: str | None
    channel_name: str | None
    verdict: str
    reason: str


class RouteOut(BaseModel):
    """Which channel mail From this address would take, and the rules looked at."""

    channel: RouteChannel | None
    held: bool
    reason: str
    steps: list[RouteStep]


class OrganizationOut(BaseModel):
    id: str
    name: str
    default_channel_id: str | None
    fallback: Fallback


class OrganizationPatch(Input):
    default_channel_id: Annotated[Line, Field(max_length=200)] | None = Field(
        None, description="A channel id or name of the organization; null clears it."
    )
    fallback: Fallback | None = None


class EventOut(BaseModel):
    id: str
    type: str
    created_at: Timestamp
    data: dict[str, Any]


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None = Field(
        description="Where to continue from; null only while there are no events yet."
    )


class Health(BaseModel):
    status: str
    version: str
