"""TLS for outbound SMTP: one client context per channel that always verifies chain and host.

There is deliberately no switch to turn verification off: a channel that cannot present a
certificate the system trusts must bring its CA as `ca_pem` (added to the trust store).
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from mailvia.domain.probe import describe_certificate
from mailvia.domain.replies import Reply, tls_refused


def client_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """A client context: system trust store plus `ca_pem`, host name checked, TLS 1.2 minimum.

    Raises ssl.SSLError when `ca_pem` is not a PEM certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def find_tls_error(error: BaseException) -> ssl.SSLError | None:
    """The ssl error behind `error` (its cause and context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_closed_during_handshake(error: ssl.SSLError) -> bool:
    """Whether the peer just went away (a network failure rather than a TLS refusal)."""
    return isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError)


def tls_reply(error: ssl.SSLError) -> Reply:
    """The reply for a TLS failure: fail closed, saying why (never a secret, only the reason)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or "unknown reason"
        return tls_refused(f"certificate verification failed: {reason}")
    return tls_refused(f"TLS handshake failed: {error.reason or type(error).__name__}")


def describe_tls(ssl_object: Any) -> str:
    """`TLSv1.3 (cipher); certificate CN=... (DNS:..., IP:...), valid until DATE (N days)`."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return "TLS established"
    cipher = ssl_object.cipher()
    version = f"{ssl_object.version()} ({cipher[0]})" if cipher else str(ssl_object.version())
    return f"{version}; {describe_certificate(ssl_object.getpeercert() or {}, time.time())}"
