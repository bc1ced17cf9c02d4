"""store/pg_arrays.typed: the statements over arrays take each column's PostgreSQL type from
store/tables.py (written once), in words `arrays` knows how to make of one type."""

from __future__ import annotations

import pytest

from mailvia.store import events, message_inserts_pg, settle, settle_pg
from mailvia.store.pg_arrays import _TYPES, Column, typed
from mailvia.store.tables import messages

LISTS: dict[str, tuple[Column, ...]] = {
    "messages (insert)": message_inserts_pg.MESSAGE_COLUMNS,
    "message_contents": message_inserts_pg.CONTENT_COLUMNS,
    "recipients (insert)": message_inserts_pg.RECIPIENT_COLUMNS,
    "messages (settle, with the lease)": settle_pg._LEASED,
    "recipients (settle)": (*settle._RECIPIENT_KEY, *settle._RECIPIENT_SET),
    "recipients (leftovers)": (*settle._LEFTOVERS_KEY, *settle._LEFTOVERS_SET),
    "attempts": settle._PG_ATTEMPT_COLUMNS,
    "events": events._PG_COLUMNS,
}


def test_typed_takes_the_tables_types_in_the_order_given() -> None:
    assert typed(messages, size="b_size", seq="b_seq", created_at="b_at", test="b_t") == (
        ("size", "b_size", "integer"),
        ("seq", "b_seq", "bigint"),
        ("created_at", "b_at", "double precision"),
        ("test", "b_t", "boolean"),
    )


@pytest.mark.parametrize("columns", LISTS.values(), ids=LISTS.keys())
def test_every_type_is_one_arrays_makes_of_one_type_or_leaves_as_it_is(
    columns: tuple[Column, ...],
) -> None:
    """A number type `arrays` did not know (a table declaring sa.Float: "float") would let a
    time given as an int among floats through, and psycopg refuse the whole statement."""
    for column, _, kind in columns:
        assert kind in _TYPES or kind in {"text", "bytea"}, (column, kind)
