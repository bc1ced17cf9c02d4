"""A fault-injecting test SMTP server (aiosmtpd) that captures mail to a maildir; `fake/` adds
fake Google and Microsoft (OAuth, Gmail API, Graph, SMTP XOAUTH2) on the same maildir.

Imports only the standard library, aiosmtpd, cryptography, starlette and uvicorn; no other
mailvia module (an import-linter contract).
"""

from __future__ import annotations

from mailvia.testserver.faults import (
    STAGES,
    Drop,
    FaultRule,
    NoReply,
    RecipientFault,
    Reply,
    Stall,
    parse_fault,
    parse_faults_text,
    recipient_fault,
)
from mailvia.testserver.server import ServerOptions, TestServer, ThreadedTestServer

__all__ = [
    "STAGES",
    "Drop",
    "FaultRule",
    "NoReply",
    "RecipientFault",
    "Reply",
    "ServerOptions",
    "Stall",
    "TestServer",
    "ThreadedTestServer",
    "parse_fault",
    "parse_faults_text",
    "recipient_fault",
]
