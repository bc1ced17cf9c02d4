"""A small world for delivery tests: services wired by app.build on a temporary data folder,
organization `acme` with domain `acme.test`, team `sales`, rep `jane@acme.test`, and
certificates from a test CA (trustme).

On SQLite a World starts from a copy of a migrated file, and its two users get one argon2
hash made once per process (of a password no one knows, as their one-time passwords were
never shown): migrating and hashing took ~0.7 s of every test. On PostgreSQL pass
`migrated_pg_url` for the same saving."""

from __future__ import annotations

import functools
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from mailvia.app import wire
from mailvia.domain.channel import Auth, Channel, Scope, Security, Timeouts
from mailvia.domain.retry import RetryPolicy
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.services import Services
from mailvia.outbox.submit import Submission
from mailvia.outbox.tenancy import Tenancy
from mailvia.passwords import hash_password
from mailvia.settings import Settings
from support.databases import migrated_sqlite_file

SHORT = Timeouts(connect=5, greeting=5, command=5, data_init=5, data_block=5, data_end=5)


@dataclass
class Certs:
    ca: trustme.CA
    cert: Path
    key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem.bytes().decode()


def make_certs(folder: Path, *hosts: str) -> Certs:
    """A CA and a server certificate for `hosts` (default 127.0.0.1 and localhost)."""
    ca = trustme.CA()
    server = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return Certs(ca, cert, key)


@functools.cache
def unknown_password_hash() -> str:
    """A real argon2 hash of a password no one knows, made once per process."""
    return hash_password(secrets.token_urlsafe(16))


class World:
    """Services plus the acme tenant (and, for tests only, the store, vault and transport)."""

    def __init__(self, data_dir: Path, db_url: str | None = None, **settings: object) -> None:
        if db_url is None and not (data_dir / "mailvia.db").exists():
            migrated_sqlite_file(data_dir / "mailvia.db")
        self._open(data_dir, db_url, settings)
        now = time.time()
        t = Tenancy(
            self.store,
            hash_password=lambda _password: unknown_password_hash(),
            tokens=self.services.tokens,
        )
        t.create_org("acme", now)
        t.create_team("sales", "acme", now)
        t.add_domain("acme", "acme.test", now)
        self.jane: User = t.create_user(
            "jane@acme.test", org_name="acme", team_name="sales", admin=False, now=now
        )[0]
        self.admin: User = t.create_user(
            "boss@acme.test", org_name="acme", team_name="sales", admin=True, now=now
        )[0]

    @classmethod
    def copied(cls, template: Path, data_dir: Path) -> World:
        """A world on a copy of `template`, the SQLite data folder of another (closed) World:
        the same tenants in about 0.15 s, without migrations and password hashing (~3 s)."""
        shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns("*.lock"))
        world = cls.__new__(cls)
        world._open(data_dir, None, {})
        jane, admin = (world.store.find_user(e) for e in ("jane@acme.test", "boss@acme.test"))
        assert jane is not None and admin is not None, "the template is not a World's folder"
        world.jane, world.admin = jane, admin
        return world

    def _open(self, data_dir: Path, db_url: str | None, settings: dict[str, object]) -> None:
        self.settings = Settings.load(
            {},
            {
                "data_dir": data_dir,
                "db_url": db_url,
                "allow_private_hosts": "127.0.0.0/8,::1/128",
                "worker_id": "test-worker",
                "lease_seconds": 60.0,
                # the store calls in threads of this process, where tests arrange and look at
                # them (tests/integration/test_store_process.py passes `process`)
                "delivery_store": "thread",
                **settings,
            },
        )
        wired = wire(self.settings, create_key=True)
        self.services: Services = wired.services
        # The adapters behind the services, for tests that look at or arrange stored state.
        self.store, self.vault, self.transport = wired.store, wired.vault, wired.transport
        self.sent: dict[str, bytes] = {}  # message id -> the exact bytes submitted

    def channel(
        self,
        port: int,
        *,
        name: str = "jane-box",
        certs: Certs | None = None,
        security: Security = Security.STARTTLS,
        auth: Auth = Auth.PLAIN,
        username: str | None = "jane",
        password: str | None = "secret",
        host: str = "127.0.0.1",
        address: str = "jane@acme.test",
        retry: RetryPolicy | None = None,
        timeouts: Timeouts = SHORT,
        **kw: object,
    ) -> Channel:
        spec = ChannelSpec(
            name=name,
            host=host,
            port=port,
            security=security,
            auth=auth,
            username=username if auth is not Auth.NONE else None,
            password=password if auth is not Auth.NONE else None,
            ca_pem=certs.ca_pem if certs else None,
            address=address,
            retry=retry,
            timeouts=timeouts,
            **kw,  # type: ignore[arg-type]
        )
        return self.services.channels.add(self.jane, spec, time.time())[0]

    def team_channel(self, port: int, *, name: str = "acme-relay") -> Channel:
        """A team (domain-scoped) channel of sales for acme.test, added by the admin: it may
        carry jane's mail too (her own channel being the only one for her address)."""
        spec = ChannelSpec(
            name=name,
            host="127.0.0.1",
            port=port,
            auth=Auth.NONE,
            scope=Scope.DOMAIN,
            domains=("acme.test",),
            team_name="sales",
            timeouts=SHORT,
        )
        return self.services.channels.add(self.admin, spec, time.time())[0]

    def send(
        self,
        *,
        to: Sequence[str] = ("bob@example.com",),
        subject: str = "hello",
        text: str = "hi there",
        count: int = 1,
        now: float | None = None,
    ) -> list[Receipt]:
        now = time.time() if now is None else now
        size = self.services.max_message_size
        subs = [
            Submission(
                compose(
                    Draft(
                        from_="Jane <jane@acme.test>", to=to, subject=f"{subject} {i}", text=text
                    ),
                    now=now,
                    max_size=size,
                )
            )
            for i in range(count)
        ]
        receipts = self.services.submitter.submit(self.jane, subs, now=now)
        for receipt, sub in zip(receipts, subs, strict=True):
            self.sent[receipt.id] = sub.composed.content
        return receipts

    def submit_raw(self, content: bytes, to: Sequence[str]) -> Receipt:
        from mailvia.domain.message import Envelope
        from mailvia.outbox.compose import inspect_raw

        composed = inspect_raw(
            content,
            envelope=Envelope("jane@acme.test", tuple(to)),
            max_size=self.services.max_message_size,
        )
        return self.services.submitter.submit(self.jane, [Submission(composed)], now=time.time())[0]

    async def close(self) -> None:
        await self.services.aclose()
