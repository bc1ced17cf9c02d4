"""A fault-injecting test SMTP server (aiosmtpd) that captures mail to a maildir.

Imports only the standard library, aiosmtpd and cryptography; no other mailvia module.
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
