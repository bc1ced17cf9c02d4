"""Hands messages to channels' SMTP servers with aiosmtplib, behind the outbound address guard.

The HTTP adapters (mail_api, apis, webhooks, oauth_client, oauth_idtoken) import httpx, authlib,
joserfc and standardwebhooks inside the functions that send: every CLI command that builds the
service constructs them, and most never make a request (a tenth of a second of imports)."""

from __future__ import annotations

from mailvia.transport.guard import OutboundGuard
from mailvia.transport.pool import SmtpTransport

__all__ = ["OutboundGuard", "SmtpTransport"]
