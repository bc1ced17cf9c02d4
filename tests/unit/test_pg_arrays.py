"""store/pg_arrays.arrays: each number column's values of one type (psycopg refuses a binary
list of mixed types), None kept, text left as it is."""

from __future__ import annotations

from mailvia.store.pg_arrays import arrays

COLUMNS = (
    ("at", "b_at", "double precision"),
    ("seq", "b_seq", "bigint"),
    ("code", "b_code", "integer"),
    ("flag", "b_flag", "boolean"),
    ("text", "b_text", "text"),
)


def test_every_number_column_is_of_one_type() -> None:
    rows = [(1.5, 7, 250, True, "a"), (2, 8.0, None, 0, "b"), (None, True, 451.0, 1, None)]
    got = arrays(rows, COLUMNS)
    assert got == {
        "b_at": [1.5, 2.0, None],
        "b_seq": [7, 8, 1],
        "b_code": [250, None, 451],
        "b_flag": [True, False, True],
        "b_text": ["a", "b", None],
    }
    assert [type(v) for v in got["b_at"][:2]] == [float, float]
    assert {type(v) for v in got["b_seq"] + got["b_code"] if v is not None} == {int}
    assert {type(v) for v in got["b_flag"]} == {bool}


def test_no_rows_give_empty_lists() -> None:
    assert arrays([], COLUMNS) == {bind: [] for _, bind, _ in COLUMNS}
