"""The media type the API's bodies are: JSON (`application/json`, or a `+json` type such
as `application/merge-patch+json`). Pure."""

from __future__ import annotations

import re

from mailvia.domain.errors import UnsupportedMediaType

_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.I)


def check_json(declared: str | None) -> None:
    """Raises UnsupportedMediaType (415) when a body is declared as something other than
    JSON, naming what was declared (its media type, at most 100 characters)."""
    if declared is not None and not _JSON.match(declared):
        sent = declared.partition(";")[0].strip()[:100] or "empty"
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {sent}"
        )
