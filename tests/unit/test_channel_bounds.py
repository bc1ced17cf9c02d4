"""A channel's sizes are bounded once, in the domain, whatever intake made the channel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import (
    Auth,
    Channel,
    Kind,
    Owner,
    Scope,
    Security,
    check_channel,
)
from mailvia.domain.errors import InvalidChannel

GOOD = Channel(
    id="c1",
    organization_id="o1",
    name="box",
    kind=Kind.SMTP,
    host="smtp.example.com",
    port=587,
    security=Security.STARTTLS,
    auth=Auth.NONE,
    scope=Scope.ADDRESS,
    owner=Owner(user_id="u1"),
    address="jane@example.com",
)


def test_a_channel_inside_every_bound_passes() -> None:
    check_channel(GOOD)
    check_channel(replace(GOOD, port=1, max_connections=100, max_recipients_per_message=1000))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("port", 0, "port: must be between 1 and 65535"),
        ("port", 65536, "port: must be between 1 and 65535"),
        ("max_connections", 0, "max_connections: must be between 1 and 100"),
        ("max_connections", 101, "max_connections: must be between 1 and 100"),
        ("max_recipients_per_message", 0, "between 1 and 1000"),
        ("max_recipients_per_message", 1001, "between 1 and 1000"),
    ],
)
def test_a_size_out_of_bounds_is_refused_with_its_name(field: str, value: int, words: str) -> None:
    with pytest.raises(InvalidChannel, match=words):
        check_channel(replace(GOOD, **{field: value}))
