"""A large body received into one buffer (ingress/api/bodies.py `receive_body`) is the body
Starlette's `Request.body` reads, part by part, whatever its declared length says; a
disconnect is a ClientDisconnect as before."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from mailvia.ingress.api.bodies import receive_body

PARTS = [b'{"messages": [', b"x" * 70_000, b"", b"y" * 3, b"]}"]
WHOLE = b"".join(PARTS)


def _request(parts: list[bytes], length: str | None, *, disconnect: bool = False) -> Request:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": k < len(parts) - 1}
        for k, part in enumerate(parts)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    headers = [] if length is None else [(b"content-length", length.encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@pytest.mark.parametrize(
    "length",
    [str(len(WHOLE)), str(len(WHOLE) - 7), str(len(WHOLE) + 7), "0", None, "12x", "٣"],
    ids=["declared", "shorter", "longer", "zero", "none", "not-digits", "not-ascii"],
)
async def test_the_body_is_what_starlette_reads(length: str | None) -> None:
    body = await receive_body(_request(PARTS, length))
    assert bytes(body) == WHOLE == await _request(PARTS, length).body()


async def test_a_disconnect_while_the_body_arrives_is_a_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await receive_body(_request(PARTS, str(len(WHOLE)), disconnect=True))
