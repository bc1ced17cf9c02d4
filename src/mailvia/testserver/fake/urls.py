"""Where the fake providers serve each endpoint: the real providers' paths on one origin.

Pure. The settings name the values mailvia reads (docs/settings.md); Microsoft's keep the
literal `{tenant}`, which mailvia fills in.
"""

from __future__ import annotations

GOOGLE_AUTHORIZE = "/o/oauth2/v2/auth"  # https://accounts.google.com/o/oauth2/v2/auth
GOOGLE_TOKEN = "/token"  # https://oauth2.googleapis.com/token
GOOGLE_REVOKE = "/revoke"  # https://oauth2.googleapis.com/revoke
GOOGLE_USERINFO = "/v1/userinfo"  # https://openidconnect.googleapis.com/v1/userinfo
GOOGLE_JWKS = "/oauth2/v3/certs"  # https://www.googleapis.com/oauth2/v3/certs
GMAIL_SEND = "/gmail/v1/users/{user}/messages/send"  # https://gmail.googleapis.com
GMAIL_UPLOAD = "/upload/gmail/v1/users/{user}/messages/send"
MICROSOFT_AUTHORIZE = "/{tenant}/oauth2/v2.0/authorize"  # https://login.microsoftonline.com
MICROSOFT_TOKEN = "/{tenant}/oauth2/v2.0/token"
MICROSOFT_JWKS = "/{tenant}/discovery/v2.0/keys"
GRAPH_BASE = "/v1.0"  # https://graph.microsoft.com/v1.0
GRAPH_SEND = GRAPH_BASE + "/me/sendMail"


def provider_settings(origin: str) -> dict[str, str]:
    """The MAILVIA_* settings that point mailvia at a fake on `origin` (`http://HOST:PORT`)."""
    return {
        "MAILVIA_OAUTH_GOOGLE_AUTHORIZE_URL": origin + GOOGLE_AUTHORIZE,
        "MAILVIA_OAUTH_GOOGLE_TOKEN_URL": origin + GOOGLE_TOKEN,
        "MAILVIA_OAUTH_GOOGLE_REVOKE_URL": origin + GOOGLE_REVOKE,
        "MAILVIA_OAUTH_GOOGLE_USERINFO_URL": origin + GOOGLE_USERINFO,
        "MAILVIA_OAUTH_GOOGLE_JWKS_URL": origin + GOOGLE_JWKS,
        "MAILVIA_GMAIL_API_URL": origin,
        "MAILVIA_OAUTH_MICROSOFT_AUTHORIZE_URL": origin + MICROSOFT_AUTHORIZE,
        "MAILVIA_OAUTH_MICROSOFT_TOKEN_URL": origin + MICROSOFT_TOKEN,
        "MAILVIA_OAUTH_MICROSOFT_JWKS_URL": origin + MICROSOFT_JWKS,
        "MAILVIA_GRAPH_API_URL": origin + GRAPH_BASE,
    }
