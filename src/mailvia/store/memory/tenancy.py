"""The memory store's organizations, teams, users, sending domains, sender identities, API
tokens and channels: the same answers and errors as store/tenancy.py and store/channels.py.
Names and addresses compare lower-cased."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mailvia.domain.channel import (
    RUNTIME_FIELDS,
    Channel,
    ChannelState,
    mailbox_taken,
    own_mailbox,
)
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.message import PENDING
from mailvia.domain.tenancy import Fallback, Organization, Team, User, domain_of
from mailvia.outbox.addresses import login_key
from mailvia.outbox.records import TokenView
from mailvia.outbox.senders import FromRead
from mailvia.store.keep import KEEP, Keep
from mailvia.store.memory.data import Account, Data, Token, locked


class MemoryTenancy:
    _d: Data

    @locked
    def create_organization(self, org_id: str, name: str, now: Instant) -> Organization:
        if org_id in self._d.organizations or self.find_organization(name) is not None:
            raise Conflict(f"an organization named {name!r} already exists")
        self._d.organizations[org_id] = Organization(org_id, name)
        return self._d.organizations[org_id]

    @locked
    def get_organization(self, org_id: str) -> Organization:
        if org_id not in self._d.organizations:
            raise NotFound(f"no organization {org_id!r}")
        return self._d.organizations[org_id]

    @locked
    def find_organization(self, name: str) -> Organization | None:
        return next((o for o in self._d.organizations.values() if o.name == name), None)

    @locked
    def organization_names(self) -> list[str]:
        return sorted(o.name for o in self._d.organizations.values())

    @locked
    def rename_organization(self, org_id: str, name: str) -> Organization:
        org = self.get_organization(org_id)
        other = self.find_organization(name)
        if other is not None and other.id != org_id:
            raise Conflict(f"an organization named {name!r} already exists")
        self._d.organizations[org_id] = replace(org, name=name)
        return self._d.organizations[org_id]

    @locked
    def update_organization(
        self, org_id: str, *, default_channel_id: str | None, fallback: Fallback
    ) -> Organization:
        org = self.get_organization(org_id)
        changed = replace(org, default_channel_id=default_channel_id, fallback=Fallback(fallback))
        self._d.organizations[org_id] = changed
        return changed

    @locked
    def create_team(self, team_id: str, org_id: str, name: str, now: Instant) -> Team:
        self.get_organization(org_id)
        if team_id in self._d.teams or self.find_team(org_id, name) is not None:
            raise Conflict(f"a team named {name!r} already exists in this organization")
        self._d.teams[team_id] = Team(team_id, org_id, name)
        return self._d.teams[team_id]

    @locked
    def find_team(self, org_id: str, name: str) -> Team | None:
        teams = self._d.teams.values()
        return next((t for t in teams if t.organization_id == org_id and t.name == name), None)

    @locked
    def list_teams(self, org_id: str) -> list[Team]:
        return sorted((t for t in self._d.teams.values() if t.organization_id == org_id), key=_name)

    @locked
    def create_user(self, user: User, *, password_hash: str | None, now: Instant) -> User:
        email = user.email.lower()
        if user.id in self._d.accounts or self.find_user(email) is not None:
            raise Conflict(f"a user with email {email!r} already exists")
        team = self._d.teams.get(user.team_id)
        if user.organization_id not in self._d.organizations or team is None:
            raise NotFound("no such organization or team")
        made = replace(user, email=email)
        self._d.accounts[user.id] = Account(made, password_hash, now)
        return made

    @locked
    def find_user(self, email: str) -> User | None:
        email = login_key(email)
        return next((a.user for a in self._d.accounts.values() if a.user.email == email), None)

    @locked
    def get_user(self, user_id: str) -> User:
        return self._account(user_id).user

    @locked
    def list_users(self, org_id: str) -> list[User]:
        users = [a.user for a in self._d.accounts.values() if a.user.organization_id == org_id]
        return sorted(users, key=lambda u: u.email)

    @locked
    def change_email(self, user_id: str, email: str) -> User:
        email = email.lower()
        account = self._account(user_id)
        other = self.find_user(email)
        if other is not None and other.id != user_id:
            raise Conflict(f"a user with email {email!r} already exists")
        account.user = replace(account.user, email=email)
        return account.user

    @locked
    def count_users(self) -> int:
        return len(self._d.accounts)

    @locked
    def password_hash(self, user_id: str) -> str | None:
        return self._account(user_id).password_hash

    @locked
    def set_password(
        self, user_id: str, password_hash: str | None, *, must_change_password: bool
    ) -> None:
        account = self._account(user_id)
        account.password_hash = password_hash
        account.user = replace(account.user, must_change_password=must_change_password)

    def _account(self, user_id: str) -> Account:
        if user_id not in self._d.accounts:
            raise NotFound(f"no user {user_id!r}")
        return self._d.accounts[user_id]

    @locked
    def add_domain(self, org_id: str, domain: str, now: Instant) -> None:
        domain = domain.lower()
        self.get_organization(org_id)
        owner = self._d.domains.get(domain)
        if owner is not None and owner != org_id:
            raise Conflict(f"domain {domain!r} belongs to another organization")
        self._d.domains[domain] = org_id

    @locked
    def list_domains(self, org_id: str) -> list[str]:
        return sorted(domain for domain, org in self._d.domains.items() if org == org_id)

    @locked
    def domain_organization(self, domain: str) -> str | None:
        return self._d.domains.get(domain.lower())

    @locked
    def grant_identity(self, user_id: str, identity: str, now: Instant) -> None:
        self._account(user_id)
        held = self._d.identities.setdefault(user_id, [])
        if all(i != identity.lower() for _, i in held):
            held.append((now, identity.lower()))

    @locked
    def identities(self, user_id: str) -> list[str]:
        return [identity for _, identity in sorted(self._d.identities.get(user_id, []))]

    @locked
    def senders_for(self, org_id: str, address: str) -> list[User]:
        address = address.lower()
        wanted = (address, "@" + address.rpartition("@")[2])
        found: list[tuple[int, str, User]] = []
        for account in self._d.accounts.values():
            user = account.user
            held = self._d.identities.get(user.id, [])
            if user.organization_id == org_id:
                found += [(int(i != address), user.email, user) for _, i in held if i in wanted]
        return [user for *_, user in sorted(found, key=lambda f: (f[0], f[1]))]

    @locked
    def trusted_from(self, org_id: str, address: str) -> FromRead:
        holders = self.senders_for(org_id, address)
        return self._from_read(org_id, address, holder=holders[0] if holders else None)

    @locked
    def user_from(self, org_id: str, user_id: str, address: str) -> FromRead:
        return self._from_read(org_id, address, identities=tuple(self.identities(user_id)))

    def _from_read(self, org_id: str, address: str, **read: Any) -> FromRead:
        organization = self.get_organization(org_id)
        owner = self.domain_organization(domain_of(address))
        mine = (c for c in self._d.channels.values() if c.organization_id == org_id)
        channels = tuple(sorted(mine, key=lambda c: (c.name, c.id)))
        return FromRead(address.lower(), owner, organization, channels, **read)

    @locked
    def add_token(
        self, token_id: str, user_id: str, token_hash: str, name: str, now: Instant
    ) -> None:
        self._account(user_id)
        taken = any(t.token_hash == token_hash for t in self._d.tokens.values())
        if token_id in self._d.tokens or taken:
            raise Conflict("this token already exists")
        self._d.tokens[token_id] = Token(token_id, user_id, token_hash, name, now)

    @locked
    def revoke_token(self, token_id: str, now: Instant) -> None:
        token = self._d.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            raise NotFound(f"no active token {token_id!r}")
        token.revoked_at = now

    @locked
    def user_for_token(self, token_hash: str) -> User | None:
        for token in self._d.tokens.values():
            if token.token_hash == token_hash and token.revoked_at is None:
                return self._d.accounts[token.user_id].user
        return None

    @locked
    def list_tokens(self, user_id: str) -> list[TokenView]:
        mine = [t for t in self._d.tokens.values() if t.user_id == user_id]
        mine.sort(key=lambda t: t.id)
        mine.sort(key=lambda t: t.created_at, reverse=True)
        return [TokenView(t.id, t.user_id, t.name, t.created_at, t.revoked_at) for t in mine]


def _name(team: Team) -> str:
    return team.name


class MemoryChannels:
    _d: Data

    @locked
    def add_channel(self, channel: Channel, secret: bytes | None, now: Instant) -> Channel:
        if channel.organization_id not in self._d.organizations:
            raise NotFound(f"no organization {channel.organization_id!r}")
        if channel.id in self._d.channels or self._named(channel) is not None:
            raise Conflict(f"a channel named {channel.name!r} already exists in this organization")
        self._one_mailbox(channel)
        self._d.channels[channel.id] = channel
        self._d.secrets[channel.id] = secret
        return channel

    @locked
    def update_channel(self, channel: Channel, secret: bytes | Keep | None = KEEP) -> Channel:
        before = self.get_channel(channel.id)
        named = self._named(channel)
        if named is not None and named.id != channel.id:
            raise Conflict(f"a channel named {channel.name!r} already exists in this organization")
        if own_mailbox(before) != own_mailbox(channel):  # an edit that moves it (as SQL's)
            self._one_mailbox(channel)
        runtime = {name: getattr(before, name) for name in RUNTIME_FIELDS}
        kept = replace(channel, **(runtime | {"generation": before.generation + 1}))
        self._d.channels[channel.id] = kept
        if not isinstance(secret, Keep):
            self._d.secrets[channel.id] = secret
        return kept

    def _named(self, channel: Channel) -> Channel | None:
        return self.find_channel(channel.organization_id, channel.name)

    def _one_mailbox(self, channel: Channel) -> None:
        # As store/channels.py check_one_mailbox: one own channel per owner and address.
        mine = own_mailbox(channel)
        if mine is None:
            return
        same = [
            c for c in self._d.channels.values() if c.id != channel.id and own_mailbox(c) == mine
        ]
        if same:
            raise Conflict(mailbox_taken(min(same, key=lambda c: (c.name, c.id))))

    @locked
    def get_channel(self, channel_id: str) -> Channel:
        if channel_id not in self._d.channels:
            raise NotFound(f"no channel {channel_id!r}")
        return self._d.channels[channel_id]

    @locked
    def find_channel(self, org_id: str, name: str) -> Channel | None:
        every = self._d.channels.values()
        return next((c for c in every if c.organization_id == org_id and c.name == name), None)

    @locked
    def list_channels(self, org_id: str | None = None) -> list[Channel]:
        every = [c for c in self._d.channels.values() if org_id in (None, c.organization_id)]
        return sorted(every, key=lambda c: (c.name, c.id))

    @locked
    def channel_secret(self, channel_id: str) -> bytes | None:
        self.get_channel(channel_id)
        return self._d.secrets.get(channel_id)

    @locked
    def channel_secrets(self) -> list[tuple[str, bytes]]:
        return sorted((cid, s) for cid, s in self._d.secrets.items() if s is not None)

    @locked
    def remove_channel(self, channel_id: str) -> None:
        self.get_channel(channel_id)
        pending = sum(
            1
            for m in self._d.messages.values()
            if m.channel_id == channel_id and m.state in PENDING
        )
        if pending:
            raise Conflict(
                f"channel {channel_id!r} still has {pending} message(s) to send; "
                "cancel them or let them finish first"
            )
        del self._d.channels[channel_id]
        self._d.secrets.pop(channel_id, None)
        for org in list(self._d.organizations.values()):
            if org.default_channel_id == channel_id:
                self._d.organizations[org.id] = replace(org, default_channel_id=None)

    @locked
    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel:
        before = self.get_channel(channel_id)
        changed = replace(
            before,
            state=ChannelState(state),
            state_reason=reason,
            state_changed_at=now,
            generation=before.generation + 1,
            refusal=None,
        )
        self._d.channels[channel_id] = changed
        return changed

    @locked
    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None:
        now_is = self._d.channels.get(seen.id)
        active = (ChannelState.ACTIVE, seen.generation)
        if now_is is None or (now_is.state, now_is.generation) != active:
            return None
        changed = self.set_channel_state(seen.id, ChannelState.DISCONNECTED, reason, now)
        self._d.channels[seen.id] = changed = replace(changed, refusal=refusal)
        return changed

    @locked
    def set_channel_throttle(self, channel_id: str, until: Instant | None, level: int) -> None:
        channel = self.get_channel(channel_id)
        self._d.channels[channel_id] = replace(channel, throttled_until=until, throttle_level=level)
