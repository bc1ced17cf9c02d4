"""SMTP submission (aiosmtpd): `server.py` has the listeners and the session's hooks;
`auth.py` checks logins one at a time per client, `connections.py` caps connections,
`intake.py` checks a message's bytes and submits it in a group commit (`group_commit.py`),
`replies.py` is the one error-to-reply table, `tls.py` loads or makes the certificate."""
