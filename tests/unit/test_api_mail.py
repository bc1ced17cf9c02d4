"""What a provider's API can carry (domain/api_mail.py): headers against recipients, the
API's recipient and size limits, and the Bcc field added to the bytes handed to the API."""

from __future__ import annotations

import email

from mailvia.domain.api_mail import ApiLimits, as_sent, header_recipients, refusal
from mailvia.domain.channel import TransportKind
from mailvia.domain.presets import PRESETS

GRAPH = TransportKind.GRAPH
LIMITS = ApiLimits(max_size=10_000, max_recipients=3)


def message(*headers: str, body: str = "hi") -> bytes:
    lines = ["From: Jane <jane@acme.test>", *headers, "Subject: s", "", body, ""]
    return "\r\n".join(lines).encode()


def test_headers_are_read_as_the_api_reads_them() -> None:
    content = message(
        "To: Bob <BOB@example.com>, carol@example.com",
        "Cc: undisclosed-recipients:;",
        "Bcc: dan@example.com",
    )
    assert header_recipients(content) == (
        ("bob@example.com", "carol@example.com"),
        ("dan@example.com",),
    )


def test_a_message_whose_headers_match_its_recipients_is_carried() -> None:
    content = message("To: bob@example.com", "Cc: carol@example.com")
    assert refusal(GRAPH, LIMITS, recipients=["bob@example.com", "carol@example.com"],
                   content=content) is None  # fmt: skip


def test_an_idn_domain_in_a_labels_is_the_envelopes_unicode_one() -> None:
    content = message("To: =?utf-8?q?J=C3=B6rg?= <user@xn--bcher-kva.example>")
    envelope = ["user@bücher.example", "hidden@straße.de"]
    assert refusal(GRAPH, LIMITS, recipients=envelope, content=content) is None
    sent = as_sent(content, envelope)  # only the hidden one is added, as A-labels
    assert sent.startswith(b"Bcc: hidden@xn--strae-oqa.de\r\nFrom:")
    other = refusal(GRAPH, LIMITS, recipients=["user@bucher.example"], content=content)
    assert other is not None and "user@bücher.example" in other


def test_a_header_naming_someone_not_among_the_recipients_is_refused() -> None:
    # e.g. carol was delivered over SMTP before the channel changed to an API
    content = message("To: bob@example.com, carol@example.com")
    reason = refusal(GRAPH, LIMITS, recipients=["bob@example.com"], content=content)
    assert reason is not None and "carol@example.com" in reason and "graph" in reason


def test_more_recipients_than_the_api_takes_are_refused() -> None:
    rcpts = [f"r{i}@example.com" for i in range(4)]
    content = message("To: " + ", ".join(rcpts))
    reason = refusal(GRAPH, LIMITS, recipients=rcpts, content=content)
    assert reason is not None and "at most 3 recipients" in reason
    lower = refusal(GRAPH, LIMITS, recipients=rcpts[:2], content=message(
        "To: " + ", ".join(rcpts[:2])), max_recipients=1)  # fmt: skip
    assert lower is not None and "at most 1 recipients" in lower


def test_the_size_counts_as_the_api_counts_it() -> None:
    body = "x" * 8_000
    content = message("To: bob@example.com", body=body)
    assert refusal(GRAPH, LIMITS, recipients=["bob@example.com"], content=content) is None
    base64 = ApiLimits(max_size=10_000, max_recipients=3, base64=True)
    reason = refusal(GRAPH, base64, recipients=["bob@example.com"], content=content)
    assert reason is not None and "in base64" in reason


def test_envelope_only_recipients_ride_in_one_bcc_field_of_the_sent_copy() -> None:
    stored = message("To: bob@example.com", "Bcc: old@example.com")
    sent = as_sent(stored, ["bob@example.com", "old@example.com", "eve@example.com"])
    parsed = email.message_from_bytes(sent)
    assert parsed.get_all("Bcc") == ["old@example.com,\r\n eve@example.com"]
    assert sent.endswith(stored.split(b"\r\n", 1)[1].replace(b"Bcc: old@example.com\r\n", b""))
    assert as_sent(message("To: bob@example.com"), ["bob@example.com"]) == message(
        "To: bob@example.com"
    )


def test_oauth_presets_carry_their_transports_limits() -> None:
    graph = PRESETS["microsoft365"].limits(TransportKind.GRAPH)
    assert graph.max_connections == 4 and graph.max_recipients_per_message == 500
    assert [str(b) for b in graph.budgets] == ["30/60:messages", "10000/86400:recipients"]
    gmail = PRESETS["gmail"].limits(TransportKind.GMAIL_API)
    assert gmail.max_recipients_per_message == 100
    assert "2000/86400:messages" in [str(b) for b in gmail.budgets]
    assert PRESETS["gmail"].limits(TransportKind.SMTP).budgets == PRESETS["gmail"].budgets
