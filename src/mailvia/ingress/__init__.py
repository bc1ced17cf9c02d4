"""Intakes and front doors: the CLI, the HTTP API, the SMTP submission server."""
