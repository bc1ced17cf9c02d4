"""Webhook values: the retry schedule, the payload, URL and event type checks, the secret, and
the signature the sender puts on each POST."""

from __future__ import annotations

import json
import time
from typing import get_args

import pytest
from standardwebhooks import Webhook as Verifier

from mailvia.domain.errors import InvalidInput
from mailvia.ingress.api.webhook_schemas import EventType
from mailvia.outbox.records import Event
from mailvia.outbox.webhooks import (
    EVENT_TYPES,
    check_event_types,
    check_url_syntax,
    new_secret,
    next_attempt,
    payload,
)
from mailvia.transport.webhooks import signed_headers

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 10), (2, 20), (3, 40), (6, 320), (9, 2560), (10, 3600), (25, 3600), (500, 3600)],
)
def test_retries_double_from_ten_seconds_to_an_hour(attempts: int, delay: float) -> None:
    assert next_attempt(attempts, T0, T0 + 100) == T0 + 100 + delay


def test_retries_stop_a_day_after_the_delivery_was_queued() -> None:
    assert next_attempt(30, T0, T0 + 86_400 - 3600) == T0 + 86_400
    assert next_attempt(30, T0, T0 + 86_400 - 3599) is None


def test_the_whole_schedule_is_about_thirty_attempts_in_a_day() -> None:
    at, count = T0, 1
    while (following := next_attempt(count, T0, at)) is not None:
        at, count = following, count + 1
    assert 25 <= count <= 35 and at <= T0 + 86_400


def test_the_payload_is_the_event_as_the_api_shows_it() -> None:
    event = Event("evt_1", "org_1", "message.held", T0, {"message_id": "msg_1"})
    assert json.loads(payload(event)) == {
        "id": "evt_1",
        "type": "message.held",
        "created_at": "2023-11-14T22:13:20.000Z",
        "data": {"message_id": "msg_1"},
    }


def test_the_api_schema_lists_every_event_type() -> None:
    assert get_args(EventType) == EVENT_TYPES


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x?token=1",
        "http://10.0.0.1:8080/hook",
        " https://hooks.example.com/ ",
        "https://[2001:db8::1]/x",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_url_syntax(url) == url.strip()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "hooks.example.com",
        "ftp://hooks.example.com/",
        "https:///path",
        "https://u:p@hooks.example.com/",
        "https://hooks.example.com/#x",
        "https://hooks.example.com:99999/",
        "https://hooks.example.com/a b",
        "https://hooks.example.com/\x7f",
        "https://hooks.example.com/" + "a" * 2000,
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_url_syntax(url)


def test_event_types() -> None:
    assert check_event_types(None) is None
    held, sent = "message.held", "message.delivered"
    assert check_event_types([held, sent, held]) == (sent, held)  # in the listed order
    for bad in ([], ["message.sent"]):
        with pytest.raises(InvalidInput):
            check_event_types(bad)


def test_secrets_are_standard_webhooks_secrets_and_differ() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    Verifier(first)  # decodes


def test_signed_headers_verify_with_the_reference_library() -> None:
    secret, body, now = new_secret(), b'{"id":"evt_1"}', time.time()
    headers = signed_headers(secret, message_id="evt_1", timestamp=now, body=body)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == str(int(now))
    assert Verifier(secret).verify(body, headers) == {"id": "evt_1"}
    with pytest.raises(Exception, match="signature"):
        Verifier(new_secret()).verify(body, headers)
