"""Fake Google and Microsoft for trying and testing OAuth mailboxes (`--fake-providers`).

The real providers' paths on one origin: consent page, token (PKCE checked), revoke, userinfo,
JWKS, Gmail `users.messages.send`, Graph `sendMail`; faults on demand; a control surface under
`/_fake/` for tests. Modules: `server` (lifecycle), `app` (routes), `urls` (paths and the
settings), `consent` (authorize), `oauth` (token, revoke, userinfo, JWKS, the XOAUTH2 check),
`mailapi` (sending), `mime`, `tokens` (consents), `providers` (what differs), `errors` (the
providers' error bodies), `jwt`, `http` (log, faults), `state`, `control`.
Imports only the standard library, starlette, uvicorn, cryptography and the test server.
"""

from __future__ import annotations

from mailvia.testserver.fake.server import FakeProviders, ThreadedFakeProviders
from mailvia.testserver.fake.state import ClientApp, FakeOptions
from mailvia.testserver.fake.tokens import fingerprint, s256
from mailvia.testserver.fake.urls import provider_settings

__all__ = [
    "ClientApp",
    "FakeOptions",
    "FakeProviders",
    "ThreadedFakeProviders",
    "fingerprint",
    "provider_settings",
    "s256",
]
