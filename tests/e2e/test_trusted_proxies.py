"""End to end: a client cannot pose as other client addresses with X-Forwarded-For to escape
the per-client sign-in throttle, unless the operator names its address in TRUSTED_PROXIES
(a reverse proxy, whose X-Forwarded-For then is the client).

A real `mailvia serve` subprocess per case; the guesses come from 127.0.0.1, the address
uvicorn itself would trust by default."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from test_signin_abuse import guess

from support.pages import serving

pytestmark = pytest.mark.timeout(180)


def guesses(url: str, email: str) -> list[int]:
    """Six wrong passwords from 127.0.0.1, each claiming another forwarded client."""
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(6):
            client.headers["X-Forwarded-For"] = f"203.0.113.{n + 1}"
            statuses.append(guess(client, email, "not-the-password").status_code)
    return statuses


def test_forwarded_addresses_are_not_believed_by_default(tmp_path: Path) -> None:
    with serving(tmp_path) as site:
        assert guesses(site.url, site.jane.email) == [401] * 5 + [429]


def test_a_trusted_proxy_forwards_the_client_address(tmp_path: Path) -> None:
    with serving(tmp_path, MAILVIA_TRUSTED_PROXIES="127.0.0.1/32") as site:
        assert guesses(site.url, site.jane.email) == [401] * 6
