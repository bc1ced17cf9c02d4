"""The API's JSON shapes for channels and presets (SURFACE.md, "Channels").

On write, `owner` names the user by email (or id) and the team by name: `{"user":
"jane@acme.example"}` or `{"team": "sales"}`; reads show ids. `password` is write-only; reads
show `has_password`.
"""

from __future__ import annotations

import ssl
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from mailvia.domain.channel import (
    MAX_CONNECTIONS_RANGE,
    MAX_RECIPIENTS_RANGE,
    PORT_RANGE,
    Auth,
    ChannelState,
    Kind,
    Provider,
    Scope,
    Security,
    TransportKind,
    Unit,
)
from mailvia.domain.presets import PRESETS
from mailvia.ingress.api.errors import Problem
from mailvia.ingress.api.schemas import Input, Line, Text, Timestamp, WarningOut, one_line


def _known_preset(value: str) -> str:
    if value not in PRESETS:
        raise ValueError(f"expected one of {', '.join(sorted(PRESETS))}")
    return value


def _host(value: str) -> str:
    one_line(value)
    try:
        value.encode("idna")  # what resolving it will do; refuse what it cannot encode
    except UnicodeError:
        raise ValueError("not a valid host name") from None
    return value


def _pem(value: str) -> str:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=value)
    except (ssl.SSLError, ValueError, TypeError):
        raise ValueError("not a PEM certificate (-----BEGIN CERTIFICATE-----...)") from None
    return value


PresetName = Annotated[
    StrictStr,
    AfterValidator(_known_preset),
    WithJsonSchema({"type": "string", "enum": sorted(PRESETS)}),
]
Host = Annotated[StrictStr, Field(min_length=1, max_length=253), AfterValidator(_host)]
CaPem = Annotated[Text, Field(max_length=65536), AfterValidator(_pem)]
Name = Annotated[Line, Field(min_length=1, max_length=200)]
Password = Annotated[Text, Field(min_length=1, max_length=4096)]
Seconds = Annotated[float, Strict(), Field(gt=0, le=10**9, allow_inf_nan=False)]


class BudgetIn(Input):
    count: StrictInt = Field(ge=1, le=10**9)
    per_seconds: Seconds
    unit: Unit = Unit.MESSAGES


class Budget(BaseModel):
    count: int
    per_seconds: float
    unit: Unit


# One model, not a union of a user's and a team's: pydantic locates a union member's errors
# by its class name (`body.owner.UserOwnerIn.user`), a client's by the API's (`body.owner.user`).
class OwnerIn(Input):
    """Who owns the channel: exactly one of `user` or `team`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["user"]}, {"required": ["team"]}]}
    )

    user: Annotated[Line, Field(max_length=320, description="The user's email or id.")] | None = (
        None
    )
    team: Annotated[Line, Field(max_length=200, description="The team's name.")] | None = None

    @model_validator(mode="after")
    def _one_owner(self) -> OwnerIn:
        if (self.user is None) == (self.team is None):
            raise ValueError("give exactly one of user (an email or id) or team (a name)")
        return self


class UserOwner(BaseModel):
    user: str


class TeamOwner(BaseModel):
    team: str


Budgets = Annotated[list[BudgetIn], Field(max_length=20)]
MaxRecipients = Annotated[StrictInt, Field(ge=MAX_RECIPIENTS_RANGE[0], le=MAX_RECIPIENTS_RANGE[1])]
MaxConnections = Annotated[
    StrictInt, Field(ge=MAX_CONNECTIONS_RANGE[0], le=MAX_CONNECTIONS_RANGE[1])
]
Port = Annotated[StrictInt, Field(ge=PORT_RANGE[0], le=PORT_RANGE[1])]


class ChannelIn(Input):
    """A new channel. Unset fields come from the preset (if any) or defaults."""

    name: Name
    preset: PresetName | None = None
    host: Host | None = None
    port: Port | None = None
    security: Security | None = None
    auth: Auth | None = None
    username: Annotated[Line, Field(max_length=320)] | None = None
    password: Password | None = Field(None, description="Write-only.")
    ca_pem: CaPem | None = Field(None, description="A CA added to the trust store.")
    scope: Scope | None = None
    address: Annotated[Line, Field(max_length=320)] | None = None
    domains: list[Annotated[Line, Field(max_length=253)]] = Field(
        default_factory=list, max_length=100
    )
    owner: OwnerIn | None = Field(
        None, description="Default: the caller (address scope) or team `default` (domain)."
    )
    budgets: Budgets | None = None
    max_recipients_per_message: MaxRecipients | None = None
    max_connections: MaxConnections | None = None


class ChannelPatch(Input):
    """The fields a channel's owner or an admin may change in place; the others stay. When a
    field that connecting or signing in uses changes (host, port, security, auth, username,
    password), the edited channel is tested first and saved only if every step passes (else
    422 with the test's report in `test`), unless `test` is false."""

    name: Name | None = None
    host: Host | None = None
    port: Port | None = None
    security: Security | None = None
    auth: Auth | None = None
    username: Annotated[Line, Field(max_length=320)] | None = Field(
        None, description="An empty string clears it (with auth none)."
    )
    password: Password | None = Field(None, description="Write-only: replaces the password.")
    budgets: Budgets | None = None
    max_recipients_per_message: MaxRecipients | None = None
    max_connections: MaxConnections | None = None
    test: bool = Field(
        True, description="false: save the connection settings without testing them first."
    )


class StepOut(BaseModel):
    name: str
    ok: bool
    detail: str
    reply: str | None
    hint: str | None
    skipped: bool = Field(
        False,
        description="Not tried (`detail` says why); counts as passed. The `sender` step of a "
        "team or domain channel: no one sending address is known, so MAIL FROM is not tried.",
    )


class ProbeOut(BaseModel):
    ok: bool
    steps: list[StepOut]


class TestFailed(Problem):
    """A problem that may carry a test's report: an edit refused because the edited channel
    failed its test (nothing was saved)."""

    test: ProbeOut | None = Field(None, description="The test's steps (a failed test).")


class OAuthOut(BaseModel):
    """An OAuth mailbox: who issued its tokens, the mailbox, when its access token expires
    (renewed ahead of that; null once its tokens are deleted). Never a token."""

    provider: Provider
    address: str | None
    expires_at: Timestamp | None


class ChannelOut(BaseModel):
    id: str
    name: str
    kind: Kind
    preset: str | None
    host: str
    port: int
    security: Security
    auth: Auth
    username: str | None
    has_password: bool
    ca_pem: str | None
    scope: Scope
    address: str | None
    domains: list[str]
    owner: UserOwner | TeamOwner | None = Field(
        description="Null for the shared pool (kind `pool`): the operator's, no user's or team's."
    )
    budgets: list[Budget]
    max_recipients_per_message: int
    max_connections: int
    state: ChannelState
    state_reason: str | None = Field(
        description="The reply that changed the state; null for the shared pool (the "
        "operator's relay)."
    )
    state_hint: str | None = Field(
        default=None, description="What to change to mend the reply in `state_reason`."
    )
    state_changed_at: Timestamp | None
    transport: TransportKind
    oauth: OAuthOut | None = Field(description="Set for a mailbox connected by OAuth.")


class ChannelCreated(ChannelOut):
    warnings: list[WarningOut]


class ChannelList(BaseModel):
    data: list[ChannelOut]


class Paused(BaseModel):
    channel: ChannelOut
    held: int = Field(description="How many messages were held.")


class DisconnectedOut(BaseModel):
    channel: ChannelOut
    held: int = Field(description="How many messages were held.")
    revoked: bool | None = Field(
        description="true: the grant was revoked at the provider; false: the provider offers "
        "no revocation (Microsoft); null: the provider could not be reached."
    )


class ChannelEdited(ChannelOut):
    test: ProbeOut | None = Field(description="The test the edit passed (null: not tested).")
    reconnected: bool = Field(description="The edit brought a disconnected channel back.")
    released: int = Field(description="How many held messages the reconnection released.")
    retried: int = Field(description="How many deferred messages are tried again now.")


class KeptOut(BaseModel):
    id: str
    reason: str


class RemovedOut(BaseModel):
    """A channel whose mail was cancelled or moved; `removed` is false while some messages
    could not move (listed in `kept`, with why): the channel stays with them."""

    removed: bool
    cancelled: int
    moved: int
    kept: list[KeptOut]


class CancelledOut(BaseModel):
    cancelled: int = Field(description="How many waiting messages were cancelled.")


class Resumed(BaseModel):
    channel: ChannelOut
    released: int = Field(description="How many held messages were released.")


class PresetOut(BaseModel):
    name: str
    title: str
    host: str
    hosts: list[str]
    port: int
    security: Security
    auth: Auth
    scope: Scope
    username: str | None
    budgets: list[Budget]
    max_recipients_per_message: int
    max_connections: int
    mailbox: bool = Field(description="A person's mailbox: not for bulk mail.")
    advice: str
    sources: list[str]


class PresetList(BaseModel):
    data: list[PresetOut]
