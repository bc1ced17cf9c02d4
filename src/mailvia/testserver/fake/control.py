"""The control surface for tests under `/_fake/` (never a provider path). JSON in and out.

- `GET /_fake/` the settings and this list;
- `GET /_fake/requests` every provider request: `at` (the fake's clock), `method`, `path`,
  `status` (None while unanswered or when dropped), `provider`, `stage`, `account`, `consent`,
  `token` (a fingerprint, `fingerprint(token)`), `fault`;
- `GET /_fake/received` what reached the maildir (as `received.jsonl`);
- `GET /_fake/consents` every consent: id, provider, client_id, account, scopes, offline, revoked;
- `GET /_fake/refreshes` successful token refreshes per account;
- `POST /_fake/revoke {"account", "provider"?}` a user removing consent: every consent of the
  account stops working (refresh: `invalid_grant`; API calls: 401) -> `{"revoked": N}`;
- `POST /_fake/expire {"account", "provider"?}` the account's access tokens expire now
  -> `{"expired": N}`;
- `PUT /_fake/faults {"faults": ["STAGE[*N]=ACTION", ...]}` replaces the faults given at
  start (HTTP stages; budgets start afresh); 400 on a bad spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailvia.testserver.fake.http import fake_state
from mailvia.testserver.fake.tokens import PROVIDERS
from mailvia.testserver.fake.urls import provider_settings


async def index(request: Request) -> Response:
    state = fake_state(request)
    paths = [route.path for route in ROUTES]
    return JSONResponse({"settings": provider_settings(state.origin), "control": paths})


async def requests(request: Request) -> Response:
    return JSONResponse(fake_state(request).log.entries())


async def received(request: Request) -> Response:
    entries = fake_state(request).capture.received
    return JSONResponse([{k: v for k, v in e.items() if k != "content"} for e in entries])


async def consents(request: Request) -> Response:
    return JSONResponse([asdict(consent) for consent in fake_state(request).store.consents()])


async def refreshes(request: Request) -> Response:
    return JSONResponse(fake_state(request).store.refresh_counts())


async def _account_body(request: Request) -> tuple[str, str | None] | Response:
    try:
        body: Any = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("account"), str):
        return JSONResponse({"error": 'expected {"account": "...", "provider": ...}'}, 400)
    provider = body.get("provider")
    if provider is not None and provider not in PROVIDERS:
        return JSONResponse({"error": f"provider must be one of {', '.join(PROVIDERS)}"}, 400)
    return body["account"], provider


async def revoke(request: Request) -> Response:
    found = await _account_body(request)
    if isinstance(found, Response):
        return found
    account, provider = found
    return JSONResponse({"revoked": fake_state(request).store.revoke_account(account, provider)})


async def expire(request: Request) -> Response:
    found = await _account_body(request)
    if isinstance(found, Response):
        return found
    account, provider = found
    return JSONResponse({"expired": fake_state(request).store.expire_account(account, provider)})


async def faults(request: Request) -> Response:
    try:
        body: Any = json.loads(await request.body() or b"{}")
        specs = body["faults"]
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise TypeError
        fake_state(request).set_faults(specs)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        return JSONResponse(
            {"error": f'expected {{"faults": ["STAGE=ACTION", ...]}} ({error})'}, 400
        )
    except ValueError as error:
        return JSONResponse({"error": str(error)}, 400)
    return JSONResponse({"faults": specs})


ROUTES = [
    Route("/_fake/", index),
    Route("/_fake/requests", requests),
    Route("/_fake/received", received),
    Route("/_fake/consents", consents),
    Route("/_fake/refreshes", refreshes),
    Route("/_fake/revoke", revoke, methods=["POST"]),
    Route("/_fake/expire", expire, methods=["POST"]),
    Route("/_fake/faults", faults, methods=["PUT"]),
]
