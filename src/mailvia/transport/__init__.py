"""Hands messages to channels' SMTP servers with aiosmtplib, behind the outbound address guard."""

from __future__ import annotations

from mailvia.transport.guard import OutboundGuard
from mailvia.transport.pool import SmtpTransport

__all__ = ["OutboundGuard", "SmtpTransport"]
