"""The fake Gmail API and Graph sendMail, their faults and XOAUTH2 over SMTP: real servers on
127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvia.testserver.fake import FakeOptions, FakeProviders, ThreadedFakeProviders
from mailvia.testserver.xoauth2 import client_response
from support.fake_providers import (
    GOOGLE_SMTP_SCOPE,
    MICROSOFT_SMTP_SCOPE,
    auth_params,
    connect,
    consent,
    exchange,
    pkce,
    refresh,
    running,
    wait_received,
    wait_requests,
)

MESSAGE = (
    b"From: Rep <rep@acme.test>\r\nTo: a@x.test\r\nCc: c@x.test\r\n"
    b"Bcc: hidden@x.test\r\nSubject: hello\r\n\r\nHello.\r\n"
)
MS_MESSAGE = MESSAGE.replace(b"rep@acme.test", b"ms@acme.test")


def gmail(
    fake: FakeProviders, token: str, raw: bytes = MESSAGE, **json_extra: Any
) -> httpx.Response:
    url = fake.settings["MAILVIA_GMAIL_API_URL"] + "/gmail/v1/users/me/messages/send"
    body = {"raw": base64.urlsafe_b64encode(raw).decode().rstrip("="), **json_extra}
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})


def graph(
    fake: FakeProviders, token: str, raw: bytes = MS_MESSAGE, content_type: str = "text/plain"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    url = fake.settings["MAILVIA_GRAPH_API_URL"] + "/me/sendMail"
    return httpx.post(url, content=base64.b64encode(raw), headers=headers)


def access(fake: FakeProviders, provider: str, **kwargs: Any) -> str:
    account = "rep@acme.test" if provider == "google" else "ms@acme.test"
    token: str = connect(fake, provider, account, **kwargs)["access_token"]
    return token


# -- sending ---------------------------------------------------------------------------------


def test_gmail_send_stores_the_recipients_copy_and_logs_every_recipient(
    fake_providers: FakeProviders,
) -> None:
    answer = gmail(fake_providers, access(fake_providers, "google"), threadId="t-9")
    body = answer.json()
    assert answer.status_code == 200 and body["labelIds"] == ["SENT"] and body["threadId"] == "t-9"
    assert len(body["id"]) == 16
    [record] = wait_received(fake_providers, 1)
    assert record["content"] == MESSAGE.replace(b"Bcc: hidden@x.test\r\n", b"")
    assert record["rcpt_to"] == ["a@x.test", "c@x.test", "hidden@x.test"]
    assert record["mail_from"] == record["account"] == "rep@acme.test"
    assert record["via"] == "gmail_api"
    assert Path(record["file"]).read_bytes() == record["content"]
    [line] = (fake_providers.maildir / "received.jsonl").read_text().splitlines()
    assert json.loads(line) == {k: v for k, v in record.items() if k != "content"}


def test_gmail_media_upload_and_a_foreign_from(fake_providers: FakeProviders) -> None:
    token = access(fake_providers, "google")
    url = fake_providers.origin + "/upload/gmail/v1/users/rep@acme.test/messages/send"
    raw = MESSAGE.replace(b"rep@acme.test", b"boss@acme.test")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "message/rfc822"}
    answer = httpx.post(url, params={"uploadType": "media"}, content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    [record] = wait_received(fake_providers, 1)
    assert record["content"].startswith(b"From: rep@acme.test\r\nTo: a@x.test")
    wrong = httpx.post(
        url,
        params={"uploadType": "media"},
        content=raw,
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert wrong.status_code == 400 and "message/*" in wrong.json()["error"]["message"]
    other = url.replace("rep@acme.test", "other@acme.test")
    assert (
        httpx.post(other, params={"uploadType": "media"}, content=raw, headers=headers).status_code
        == 403
    )


def test_graph_send_answers_202_and_stores_the_copy(fake_providers: FakeProviders) -> None:
    answer = graph(fake_providers, access(fake_providers, "microsoft"))
    assert answer.status_code == 202 and answer.content == b""
    [record] = wait_received(fake_providers, 1)
    assert record["via"] == "graph" and record["account"] == record["mail_from"] == "ms@acme.test"
    assert b"Bcc" not in record["content"] and "hidden@x.test" in record["rcpt_to"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        (MESSAGE, "text/plain", 403, "ErrorSendAsDenied"),
        (
            b"From: ms@acme.test\r\nSubject: x\r\n\r\nhi\r\n",
            "text/plain",
            400,
            "ErrorInvalidRecipients",
        ),
        (MS_MESSAGE, "application/json", 400, "ErrorInvalidRequest"),
    ],
)
def test_graph_refuses_what_graph_refuses(
    fake_providers: FakeProviders, raw: bytes, content_type: str, status: int, code: str
) -> None:
    answer = graph(fake_providers, access(fake_providers, "microsoft"), raw, content_type)
    error = answer.json()["error"]
    assert answer.status_code == status and error["code"] == code
    assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()
    assert fake_providers.received == []


def test_graph_refuses_bad_base64(fake_providers: FakeProviders) -> None:
    headers = {
        "Authorization": f"Bearer {access(fake_providers, 'microsoft')}",
        "Content-Type": "text/plain",
    }
    url = fake_providers.settings["MAILVIA_GRAPH_API_URL"] + "/me/sendMail"
    answer = httpx.post(url, content=b"%%% not base64 %%%", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Invalid base64 string for MIME content."


def test_sending_needs_a_live_token_with_a_send_scope(fake_providers: FakeProviders) -> None:
    no_send = access(fake_providers, "google", scope="openid email")
    refused = gmail(fake_providers, no_send).json()["error"]
    assert refused["code"] == 403 and refused["errors"][0]["reason"] == "insufficientPermissions"
    full = access(fake_providers, "google", scope="https://mail.google.com/")
    assert gmail(fake_providers, full).status_code == 200
    missing = httpx.post(fake_providers.origin + "/gmail/v1/users/me/messages/send", json={})
    assert (
        missing.status_code == 401 and missing.json()["error"]["errors"][0]["reason"] == "required"
    )
    unknown = gmail(fake_providers, "ya29.forged").json()["error"]
    assert unknown["code"] == 401 and unknown["errors"][0] == {
        "message": "Invalid Credentials",
        "domain": "global",
        "reason": "authError",
    }
    ms = access(fake_providers, "microsoft", scope="openid User.Read offline_access")
    assert graph(fake_providers, ms).json()["error"]["code"] == "ErrorAccessDenied"
    assert gmail(fake_providers, access(fake_providers, "microsoft")).status_code == 401


def test_size_limits_and_missing_recipients(tmp_path: Path) -> None:
    options = FakeOptions(gmail_json_max_bytes=2000, gmail_max_bytes=1000, graph_max_bytes=1500)
    big = MESSAGE + b"x" * 1200
    for fake in running(tmp_path / "mail", options=options):
        google = access(fake, "google")
        refused = gmail(fake, google, big).json()["error"]
        assert refused["message"] == "Request payload size exceeds the limit: 1000 bytes."
        refused = gmail(fake, google, big * 2).json()["error"]
        assert refused["message"] == "Request payload size exceeds the limit: 2000 bytes."
        none = gmail(fake, google, b"From: rep@acme.test\r\n\r\nhi\r\n").json()["error"]
        assert none["message"] == "Recipient address required" and none["code"] == 400
        assert graph(fake, access(fake, "microsoft"), big).status_code == 413
        assert fake.received == []


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "reason", "domain", "message"),
    [
        (
            "gmail_send=403 rateLimitExceeded",
            403,
            "rateLimitExceeded",
            "usageLimits",
            "Rate Limit Exceeded",
        ),
        (
            "gmail_send=429 userRateLimitExceeded",
            429,
            "userRateLimitExceeded",
            "usageLimits",
            "User-rate limit exceeded.  Retry after ",
        ),
        (
            "gmail_send=403 dailyLimitExceeded",
            403,
            "dailyLimitExceeded",
            "usageLimits",
            "Daily Limit Exceeded",
        ),
        ("gmail_send=400 invalidArgument", 400, "invalidArgument", "global", "Invalid argument"),
        ("gmail_send=503", 503, "backendError", "global", "The service is currently unavailable."),
    ],
)
def test_gmail_faults_answer_gmails_error_bodies(
    fake_providers: FakeProviders, fault: str, status: int, reason: str, domain: str, message: str
) -> None:
    token = access(fake_providers, "google")
    fake_providers.set_faults([fault])
    answer = gmail(fake_providers, token)
    error = answer.json()["error"]
    assert answer.status_code == error["code"] == status
    assert error["message"].startswith(message) and error["status"]
    assert error["errors"][0]["reason"] == reason and error["errors"][0]["domain"] == domain
    assert fake_providers.received == []


def test_a_counted_graph_fault_with_retry_after_then_success(fake_providers: FakeProviders) -> None:
    token = access(fake_providers, "microsoft")
    fake_providers.set_faults(["graph_send*1=429 retry-after=5", "graph_send*1=503"])
    throttled = graph(fake_providers, token)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "5"
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    unavailable = graph(fake_providers, token)
    assert unavailable.status_code == 503 and "Retry-After" in unavailable.headers
    assert graph(fake_providers, token).status_code == 202
    logged = [r for r in fake_providers.requests if r["stage"] == "graph_send"]
    assert [r["fault"] for r in logged] == ["429 retry-after=5", "503", None]


def test_token_and_refresh_faults(fake_providers: FakeProviders) -> None:
    tokens = connect(fake_providers, "microsoft", "ms@acme.test")
    fake_providers.set_faults(["refresh*1=invalid_grant", "token*1=invalid_grant"])
    refused = refresh(fake_providers, "microsoft", tokens["refresh_token"]).json()
    assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50173]
    assert refresh(fake_providers, "microsoft", tokens["refresh_token"]).status_code == 200
    pair = pkce()
    answer = consent(fake_providers, "google", auth_params("google", pair), account="r@a.test")
    code = dict(httpx.URL(answer.headers["location"]).params)["code"]
    assert (
        exchange(fake_providers, "google", code, pair.verifier).json()["error"] == "invalid_grant"
    )


def test_authorize_userinfo_and_revoke_faults(fake_providers: FakeProviders) -> None:
    fake_providers.set_faults(
        [
            "authorize*1=temporarily_unavailable",
            "authorize*1=503",
            "userinfo=500",
            "revoke=503 retry-after=2",
        ]
    )
    params = auth_params("google", pkce())
    answer = consent(fake_providers, "google", params, account="r@a.test")
    assert "error=temporarily_unavailable" in answer.headers["location"]
    assert consent(fake_providers, "google", params, account="r@a.test").status_code == 503
    tokens = connect(fake_providers, "google", "r@a.test")
    info = httpx.get(
        fake_providers.settings["MAILVIA_OAUTH_GOOGLE_USERINFO_URL"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert info.status_code == 500 and info.json()["error"] == "server_error"
    revoked = httpx.post(
        fake_providers.settings["MAILVIA_OAUTH_GOOGLE_REVOKE_URL"],
        data={"token": tokens["access_token"]},
    )
    assert revoked.status_code == 503 and revoked.headers["Retry-After"] == "2"


def test_stall_with_seconds_waits_then_answers(fake_providers: FakeProviders) -> None:
    token = access(fake_providers, "microsoft")
    fake_providers.set_faults(["graph_send*1=stall:0.4"])
    started = time.monotonic()
    assert graph(fake_providers, token).status_code == 202
    assert time.monotonic() - started >= 0.4


@pytest.mark.parametrize(
    ("fault", "error"), [("stall", httpx.ReadTimeout), ("drop", httpx.RemoteProtocolError)]
)
def test_stall_and_drop_leave_the_client_without_an_answer(
    fake_providers: FakeProviders, fault: str, error: type[Exception]
) -> None:
    tokens = connect(fake_providers, "google", "r@a.test")
    fake_providers.set_faults([f"refresh*1={fault}"])
    with pytest.raises(error):
        httpx.post(
            fake_providers.settings["MAILVIA_OAUTH_GOOGLE_TOKEN_URL"],
            timeout=1.0,
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
    [logged] = wait_requests(fake_providers, lambda r: r["stage"] == "refresh")
    assert logged["fault"] == fault and logged["status"] is None
    assert refresh(fake_providers, "google", tokens["refresh_token"]).status_code == 200


def test_the_faults_file_is_read_for_each_request(tmp_path: Path) -> None:
    faults = tmp_path / "faults.txt"
    faults.write_text("# throttle once\ngraph_send*1=429\n")
    for fake in running(tmp_path / "mail", options=FakeOptions(faults_file=faults)):
        token = access(fake, "microsoft")
        assert graph(fake, token).status_code == 429
        assert graph(fake, token).status_code == 202
        faults.write_text("graph_send=503\n")
        assert graph(fake, token).status_code == 503
        faults.unlink()
        assert graph(fake, token).status_code == 202


def test_faults_are_set_over_http(fake_providers: FakeProviders) -> None:
    url = fake_providers.origin + "/_fake/faults"
    assert httpx.put(url, json={"faults": ["graph_send=exploded badly"]}).status_code == 400
    assert httpx.put(url, json={"faults": ["graph_send*1=503"]}).status_code == 200
    assert graph(fake_providers, access(fake_providers, "microsoft")).status_code == 503


# -- SMTP with XOAUTH2 -----------------------------------------------------------------------


class Line:
    """A line-level SMTP client, to see exactly what the server answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def smtp_session(fake: FakeProviders) -> Line:
    assert fake.smtp is not None
    client = Line(fake.smtp.port)
    client.reply()
    ehlo = client.cmd("EHLO client.test")
    assert "XOAUTH2" in ehlo and "PLAIN" not in ehlo
    return client


def test_xoauth2_accepts_a_live_token_and_records_the_mail(
    fake_providers_smtp: FakeProviders,
) -> None:
    token = access(fake_providers_smtp, "google", scope=GOOGLE_SMTP_SCOPE)
    client = smtp_session(fake_providers_smtp)
    assert client.cmd("MAIL FROM:<rep@acme.test>").startswith("530")
    reply = client.cmd(f"AUTH XOAUTH2 {client_response('rep@acme.test', token)}")
    assert reply == "235 2.7.0 Accepted"
    assert client.cmd("MAIL FROM:<rep@acme.test>").startswith("250")
    assert client.cmd("RCPT TO:<a@x.test>").startswith("250")
    assert client.cmd("DATA").startswith("354")
    assert client.cmd(MESSAGE.decode() + ".").startswith("250")
    client.close()
    [record] = wait_received(fake_providers_smtp, 1)
    assert record["via"] == "smtp" and record["account"] == "rep@acme.test"
    assert record["rcpt_to"] == ["a@x.test"]


def test_xoauth2_refuses_an_expired_token_as_gmail_does(fake_providers_smtp: FakeProviders) -> None:
    token = access(fake_providers_smtp, "google", scope=GOOGLE_SMTP_SCOPE)
    fake_providers_smtp.expire("rep@acme.test")
    client = smtp_session(fake_providers_smtp)
    challenge = client.cmd(f"AUTH XOAUTH2 {client_response('rep@acme.test', token)}")
    assert challenge.startswith("334 ")
    assert json.loads(base64.b64decode(challenge[4:])) == {
        "status": "401",
        "schemes": "Bearer",
        "scope": "https://mail.google.com/",
    }
    refused = client.cmd("")
    assert refused.startswith("535-5.7.8 Username and Password not accepted")
    assert refused.splitlines()[-1].startswith("535 5.7.8")
    client.close()


def test_xoauth2_refuses_as_office_365_does(fake_providers_smtp: FakeProviders) -> None:
    token = access(fake_providers_smtp, "microsoft", scope=MICROSOFT_SMTP_SCOPE)
    graph_only = access(fake_providers_smtp, "microsoft")
    client = smtp_session(fake_providers_smtp)
    wrong_user = client.cmd(f"AUTH XOAUTH2 {client_response('other@acme.test', token)}")
    assert wrong_user.startswith("535 5.7.3 Authentication unsuccessful")
    no_scope = client.cmd(f"AUTH XOAUTH2 {client_response('ms@acme.test', graph_only)}")
    assert no_scope.startswith("535 5.7.3")
    assert client.cmd("AUTH XOAUTH2") == "334 "  # no initial response: an empty challenge
    accepted = client.cmd(client_response("ms@acme.test", token))
    assert accepted == "235 2.7.0 Authentication successful"
    client.close()


def test_stopping_closes_a_stalled_request(tmp_path: Path) -> None:
    options = FakeOptions(faults=["graph_send=stall"])
    threaded = ThreadedFakeProviders(maildir=tmp_path / "mail", options=options)
    fake = threaded.start()
    outcome: list[object] = []
    token = access(fake, "microsoft")
    worker = threading.Thread(target=lambda: outcome.append(_graph_or_error(fake, token)))
    worker.start()
    wait_requests(fake, lambda r: r["fault"] == "stall")
    started = time.monotonic()
    threaded.stop()
    worker.join(10)
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], httpx.RemoteProtocolError)


def _graph_or_error(fake: FakeProviders, token: str) -> object:
    try:
        return graph(fake, token)
    except httpx.HTTPError as error:
        return error
