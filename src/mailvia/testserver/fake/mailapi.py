"""Gmail `users.messages.send` and Graph `sendMail` (MIME): check, parse, store in the maildir.

Gmail: `POST /gmail/v1/users/{me|address}/messages/send` with `{"raw": base64url}`, or
`POST /upload/gmail/v1/users/{me|address}/messages/send?uploadType=media` with the message
(`message/rfc822`); needs `gmail.send` or `https://mail.google.com/`; answers
`{"id", "threadId", "labelIds": ["SENT"]}`
(https://developers.google.com/gmail/api/reference/rest/v1/users.messages/send,
https://developers.google.com/gmail/api/guides/uploads). Gmail sends only as the account or
one of its send-as aliases (https://developers.google.com/gmail/api/guides/alias_and_signature_settings);
the fake knows no aliases and, as Gmail is reported to do (not in Google's reference), puts
the account in place of any other From.
Graph: `POST /v1.0/me/sendMail`, `Content-Type: text/plain`, the MIME base64-encoded; needs
`Mail.Send`; answers 202 with no body; bad base64 is 400 "Invalid base64 string for MIME
content."; a From that is not the mailbox is 403 `ErrorSendAsDenied`
(https://learn.microsoft.com/graph/api/user-sendmail, .../graph/outlook-send-mime-message).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailvia.testserver.fake import errors, mime, providers
from mailvia.testserver.fake.http import bearer, fake_state, injected, note
from mailvia.testserver.fake.tokens import Authorized, Refusal, fingerprint

_NO_RAW = "'raw' RFC822 payload message string or uploading message via /upload/* URL required"


def _authorize(request: Request, provider: str, scopes: Iterable[str]) -> Authorized | Response:
    """The caller's live token with a sending scope, or the provider's 401/403."""
    token = bearer(request)
    if token is None:
        if provider == "google":
            return errors.gmail_unauthorized(missing=True)
        return errors.graph_unauthorized("missing")
    found = fake_state(request).store.check_access(token)
    if isinstance(found, Authorized) and found.consent.provider != provider:
        found = Refusal("token_unknown")
    note(request, token=fingerprint(token))
    if isinstance(found, Refusal):
        if found.consent is not None:
            note(request, account=found.consent.account, consent=found.consent.id)
        if provider == "google":
            return errors.gmail_unauthorized(missing=False)
        return errors.graph_unauthorized(found.reason)
    note(request, account=found.consent.account, consent=found.consent.id)
    if not set(scopes) & set(found.scopes):
        if provider == "google":
            return errors.gmail_error(
                403, "insufficientPermissions", "Request had insufficient authentication scopes."
            )
        return errors.graph_error(403, "ErrorAccessDenied")
    return found


async def gmail_send(request: Request) -> Response:
    return await _gmail(request, upload=False)


async def gmail_upload(request: Request) -> Response:
    return await _gmail(request, upload=True)


async def _gmail(request: Request, *, upload: bool) -> Response:
    note(request, provider="google")
    found = _authorize(request, "google", providers.GMAIL_SEND_SCOPES)
    if isinstance(found, Response):
        return found
    account = found.consent.account
    user = request.path_params["user"]
    if user != "me" and user.lower() != account.lower():
        return errors.gmail_error(403, "forbidden", f"Delegation denied for {account}")
    fault = await injected(request, "gmail_send", errors.gmail_fault)
    if fault is not None:
        return fault
    body = await (_gmail_upload_body(request) if upload else _gmail_json_body(request))
    if isinstance(body, Response):
        return body
    return _gmail_store(request, account, body)


def _gmail_store(request: Request, account: str, body: _GmailBody) -> Response:
    raw = body.raw
    limit = fake_state(request).options.gmail_max_bytes
    if len(raw) > limit:
        message = f"Request payload size exceeds the limit: {limit} bytes."
        return errors.gmail_error(400, "badRequest", message)
    parsed = mime.parse(raw)
    if not parsed.recipients:
        return errors.gmail_error(400, "invalidArgument", "Recipient address required")
    if tuple(a.lower() for a in parsed.from_addresses) != (account.lower(),):
        raw = mime.with_from(raw, account)
    fake_state(request).capture.store(
        mime.without_bcc(raw),
        account,
        list(parsed.recipients),
        extra={"via": "gmail_api", "account": account},
    )
    message_id = secrets.token_hex(8)
    thread_id = body.thread_id or message_id
    return JSONResponse({"id": message_id, "threadId": thread_id, "labelIds": ["SENT"]})


@dataclass(frozen=True)
class _GmailBody:
    raw: bytes
    thread_id: str | None = None


async def _gmail_json_body(request: Request) -> _GmailBody | Response:
    body = await request.body()
    limit = fake_state(request).options.gmail_json_max_bytes
    if len(body) > limit:
        message = f"Request payload size exceeds the limit: {limit} bytes."
        return errors.gmail_error(400, "badRequest", message)
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return errors.gmail_error(400, "badRequest", "Invalid JSON payload received.")
    if not isinstance(document, dict) or not isinstance(document.get("raw"), str):
        return errors.gmail_error(400, "badRequest", _NO_RAW)
    thread = document.get("threadId")
    raw = _b64_any(document["raw"])
    if raw is None:
        return errors.gmail_error(
            400,
            "invalidArgument",
            "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
        )
    return _GmailBody(raw, thread if isinstance(thread, str) else None)


async def _gmail_upload_body(request: Request) -> _GmailBody | Response:
    kind = request.query_params.get("uploadType", "")
    if kind != "media":
        return errors.gmail_error(
            400,
            "badRequest",
            f"uploadType={kind or '(none)'}: the fake serves uploadType=media only",
        )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type.startswith("message/"):
        text = f"Media type '{media_type}' is not supported. Valid media types: [message/*]"
        return errors.gmail_error(400, "badContent", text)
    body = await request.body()
    return _GmailBody(body) if body else errors.gmail_error(400, "badRequest", _NO_RAW)


def _b64_any(text: str) -> bytes | None:
    """Google's bytes fields take base64 or base64url, with or without padding."""
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


async def graph_send(request: Request) -> Response:
    note(request, provider="microsoft")
    found = _authorize(request, "microsoft", providers.GRAPH_SEND_SCOPES)
    if isinstance(found, Response):
        return found
    account = found.consent.account
    fault = await injected(request, "graph_send", errors.graph_fault)
    if fault is not None:
        return fault
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/plain":
        return errors.graph_error(
            400,
            "ErrorInvalidRequest",
            "The fake serves the MIME form only: send the message base64-encoded as text/plain",
        )
    return _graph_store(request, account, await request.body())


def _graph_store(request: Request, account: str, body: bytes) -> Response:
    if len(body) > fake_state(request).options.graph_max_bytes:
        return errors.graph_error(413)
    try:
        raw = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        return errors.graph_error(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        )
    parsed = mime.parse(raw)
    if parsed.from_addresses and parsed.from_addresses[0].lower() != account.lower():
        return errors.graph_error(
            403,
            "ErrorSendAsDenied",
            "The user account which was used "
            "to submit this request does not have the right to send mail "
            "on behalf of the specified sending account., Cannot submit "
            "message.",
        )
    if not parsed.recipients:
        return errors.graph_error(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is "
            "not valid., A message can't be sent because it contains no "
            "recipients.",
        )
    fake_state(request).capture.store(
        mime.without_bcc(raw),
        account,
        list(parsed.recipients),
        extra={"via": "graph", "account": account},
    )
    return Response(status_code=202)
