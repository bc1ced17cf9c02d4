"""End to end: one header rule for every intake. A running `mailvia serve` refuses the same From
and Sender forgeries through the API's fields, the API's raw mode and SMTP submission: a
display name that shows another address (plain, RFC 2047 encoded word, fullwidth at-sign), a
second From written `From :` (RFC 5322's obsolete syntax, which some readers take as From),
two Sender fields, and a Sender that is not one of the user's identities. Nothing is stored
for any of them; the same message without the forgery is accepted by each intake."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import Cli, require_console_script
from support.served import Served, serving, tenants

pytestmark = pytest.mark.timeout(180)

JANE = "jane@acme.test"
TAIL = "To: buyer@example.com\r\nSubject: quote\r\n\r\nhello\r\n"
SPOOFED = "shows another address"
# (the From or Sender lines, the API's status and the words its detail and SMTP's reply share)
RAW_CASES = {
    "plain name": (f'From: "boss@acme.test" <{JANE}>\r\n', 422, SPOOFED),
    "encoded word": (f"From: =?utf-8?q?boss=40acme.test?= <{JANE}>\r\n", 422, SPOOFED),
    "fullwidth at": (f"From: =?utf-8?q?boss=EF=BC=A0acme.test?= <{JANE}>\r\n", 422, SPOOFED),
    "second From :": (f"From: {JANE}\r\nFrom : boss@acme.test\r\n", 422, "more than one From"),
    "first From :": (f"From : boss@acme.test\r\nFrom: {JANE}\r\n", 422, "more than one From"),
    "two Senders": (
        f"From: {JANE}\r\nSender: {JANE}\r\nSender: boss@acme.test\r\n",
        422,
        "more than one Sender",
    ),
    "Sender of another domain": (
        f"From: {JANE}\r\nSender: ceo@victim.test\r\n",
        403,
        "Sender header: ceo@victim.test",
    ),
    "Sender of another user": (
        f"From: {JANE}\r\nSender: joe@acme.test\r\n",
        403,
        "Sender header: joe@acme.test is not one of your sender identities",
    ),
}
FIELD_CASES = {
    "plain name": f'"boss@acme.test" <{JANE}>',
    "encoded word": f"=?utf-8?q?boss=40acme.test?= <{JANE}>",
    "fullwidth at": f'"boss\uff20acme.test" <{JANE}>',
    "zero-width space": f'"boss@acme\u200b.test" <{JANE}>',
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_console_script()
    data_dir = tmp_path_factory.mktemp("originator") / "data"
    tokens = tenants(data_dir, "jane", "boss")
    cli = Cli(data_dir, MAILVIA_DISPATCH="off")
    with serving(cli, tokens) as served:
        yield served


def raw(head: str) -> dict[str, str]:
    return {"raw": base64.b64encode((head + TAIL).encode()).decode()}


def stored(served: Served) -> int:
    with served.client("boss") as boss:
        return len(boss.get("/v1/messages", params={"limit": 200}).json()["data"])


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_api_raw_and_smtp_refuse_the_same_forgery(served: Served, case: str) -> None:
    head, status, words = RAW_CASES[case]
    before = stored(served)
    with served.client("jane") as jane:
        response = jane.post("/v1/messages", json=raw(head))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"]

    with served.smtp("jane") as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(JANE, ["buyer@example.com"], (head + TAIL).encode())
    code, text = refused.value.smtp_code, refused.value.smtp_error.decode()
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert words in text
    assert stored(served) == before


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_api_fields_refuse_a_display_name_that_shows_another_address(
    served: Served, case: str
) -> None:
    before = stored(served)
    body = {"from": FIELD_CASES[case], "to": ["buyer@example.com"], "text": "hello"}
    with served.client("jane") as jane:
        response = jane.post("/v1/messages", json=body)
        assert response.status_code == 422, response.text
        assert SPOOFED in response.json()["detail"]
        batch = jane.post("/v1/messages/batch", json={"messages": [body]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["data"][0]["status"] == 422
    assert stored(served) == before


def test_the_same_message_without_a_forgery_is_taken_by_every_intake(served: Served) -> None:
    before = stored(served)
    head = f'From: "Jane Doe" <{JANE}>\r\nSender: {JANE}\r\n'
    with served.client("jane") as jane:
        assert jane.post("/v1/messages", json=raw(head)).status_code == 202
        body = {"from": f'"Jane @ Acme" <{JANE}>', "to": ["buyer@example.com"], "text": "hi"}
        assert jane.post("/v1/messages", json=body).status_code == 202
    with served.smtp("jane") as client:
        assert client.sendmail(JANE, ["buyer@example.com"], (head + TAIL).encode()) == {}
    assert stored(served) == before + 3


def test_the_cli_applies_the_same_rule(served: Served, tmp_path: Path) -> None:
    eml = tmp_path / "spoof.eml"
    eml.write_bytes((f"From: {JANE}\r\nFrom : boss@acme.test\r\n" + TAIL).encode())
    before = stored(served)
    result = Cli(served.data_dir).run("send", "--user", JANE, str(eml))
    assert result.code == 1 and "more than one From" in result.stderr, str(result)
    assert stored(served) == before
