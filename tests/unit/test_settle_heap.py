"""serve and worker keep what starting made out of later collections (gc.freeze)."""

from __future__ import annotations

import gc

from mailvia.ingress.cli.serve import settle_heap


class Made:
    pass


def test_settle_heap_moves_the_objects_made_so_far_out_of_collections() -> None:
    made = Made()
    assert any(o is made for o in gc.get_objects())
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is made for o in gc.get_objects())  # in no generation a collection walks
    finally:
        gc.unfreeze()
