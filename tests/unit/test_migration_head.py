"""`migration.HEAD`, the revision a start compares the database with before it imports
Alembic, is Alembic's own single head of the package's scripts: a new migration that does not
move HEAD fails here (a start would otherwise import Alembic every time)."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from mailvia.store.migration import HEAD, alembic_config


def test_head_is_alembics_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD]
