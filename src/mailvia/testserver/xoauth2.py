"""SASL XOAUTH2 for the test SMTP server: the client's response, the providers' replies.

`authenticate` holds the exchange; the rest are values and text. The token check itself is
given by the fake providers (`Xoauth2Check`).

The initial client response is `base64("user=" USER "^Aauth=Bearer " TOKEN "^A^A")`; on a bad
token Gmail answers `334 base64({"status", "schemes", "scope"})`, waits for the client's empty
line, then `535 5.7.8` (https://developers.google.com/gmail/imap/xoauth2-protocol, "Error
response"; Gmail's SMTP text as seen in nodemailer/nodemailer#114 and PHPMailer/PHPMailer#2328).
Office 365 answers `535 5.7.3 Authentication unsuccessful [SERVER]` at once
(tarickb/sasl-xoauth2#43, jstedfast/MailKit#1712).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiosmtpd.smtp import MISSING, AuthResult

Style = Literal["gmail", "office365"]

GMAIL_ACCEPTED = "235 2.7.0 Accepted"
OFFICE365_ACCEPTED = "235 2.7.0 Authentication successful"
GMAIL_REFUSED = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials fake.1 - gsmtp"
)
OFFICE365_REFUSED = "535 5.7.3 Authentication unsuccessful [FAKE0001.PROD.OUTLOOK.COM]"
MALFORMED = "501 5.5.2 Cannot decode the XOAUTH2 response"


@dataclass(frozen=True)
class Xoauth2Verdict:
    """What the token check said: `account` when accepted, else how to refuse.

    `style` picks the provider's wording; `status` and `scope` fill Gmail's JSON challenge.
    """

    account: str | None
    style: Style = "gmail"
    status: str = "400"
    scope: str = "https://mail.google.com/"

    @property
    def accepted(self) -> bool:
        return self.account is not None

    def success_reply(self) -> str:
        return GMAIL_ACCEPTED if self.style == "gmail" else OFFICE365_ACCEPTED

    def gmail_challenge(self) -> bytes:
        """The JSON Gmail sends (base64-encoded by the caller) before its 535."""
        body = {"status": self.status, "schemes": "Bearer", "scope": self.scope}
        return json.dumps(body, separators=(",", ":")).encode()


# (user, access token) -> verdict; called once per AUTH XOAUTH2.
Xoauth2Check = Callable[[str, str], Xoauth2Verdict]


@dataclass(frozen=True)
class Xoauth2Response:
    """The parts of a client's XOAUTH2 response."""

    user: str
    token: str


def parse_response(blob: bytes) -> Xoauth2Response | None:
    """Read `user=...^Aauth=Bearer ...^A^A` (already base64-decoded); None when malformed."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for part in text.split("\x01"):
        key, eq, value = part.partition("=")
        if eq:
            fields[key] = value
    user, auth = fields.get("user", ""), fields.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if not user or scheme.lower() != "bearer" or not token.strip():
        return None
    return Xoauth2Response(user=user, token=token.strip())


def decode_initial(argument: str) -> Xoauth2Response | None:
    """Decode the base64 initial response given on the AUTH line; None when malformed."""
    try:
        return parse_response(base64.b64decode(argument.encode(), validate=True))
    except (binascii.Error, ValueError):
        return None


def client_response(user: str, token: str) -> str:
    """The base64 initial client response for `user` and `token` (for tests and clients)."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


# aiosmtpd's `SMTP.challenge_auth`: sends `334 base64(challenge)`, returns the decoded answer
# (or MISSING after it answered a `*` or bad base64 itself).
Challenge = Callable[[bytes | str], Awaitable[Any]]


async def authenticate(
    challenge: Challenge, check: Xoauth2Check, args: list[str]
) -> tuple[AuthResult, str | None]:
    """Run one AUTH XOAUTH2: aiosmtpd's result and the account when the token was accepted."""
    if len(args) > 1:
        response = decode_initial(args[1])
    else:
        blob = await challenge("")
        if blob is MISSING:
            return AuthResult(success=False, handled=True), None
        response = parse_response(blob)
    if response is None:
        return AuthResult(success=False, handled=False, message=MALFORMED), None
    verdict = check(response.user, response.token)
    if verdict.accepted:
        return AuthResult(success=True, message=verdict.success_reply()), verdict.account
    if verdict.style == "office365":
        return AuthResult(success=False, handled=False, message=OFFICE365_REFUSED), None
    # Gmail sends its error as a challenge and answers 535 to whatever comes back.
    if await challenge(verdict.gmail_challenge()) is MISSING:
        return AuthResult(success=False, handled=True), None
    return AuthResult(success=False, handled=False, message=GMAIL_REFUSED), None
