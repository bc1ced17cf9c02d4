"""`migration.HEAD`, the revision a start compares the database with before it imports
Alembic, is Alembic's own single head of the package's scripts. HEAD is the highest number
among the scripts' file names: a new script whose number is not the highest, or a head that
is not the highest-numbered script, fails here (a start would skip the migration, or refuse
the schema as newer)."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from mailvia.store.migration import HEAD, alembic_config


def test_head_is_alembics_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD]
