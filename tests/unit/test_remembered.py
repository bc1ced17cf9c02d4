"""`Remembered.value`: a key's exception is raised again on each ask, with the traceback of its
first raise; raising the one remembered exception object would otherwise prepend the raising
frames each time (a batch of 1,000 items refused for one sender kept thousands of frames)."""

from __future__ import annotations

import traceback

import pytest

from mailvia.outbox.remembered import Remembered


class Refused(Exception):
    pass


def _refuse() -> int:
    raise Refused("no")


def test_a_value_is_worked_out_once() -> None:
    asked: list[str] = []
    remembered: Remembered[str, int] = Remembered()

    def work_out() -> int:
        asked.append("x")
        return 7

    assert [remembered.value("k", work_out) for _ in range(3)] == [7, 7, 7]
    assert asked == ["x"]


def test_a_remembered_refusal_keeps_its_first_traceback_however_often_raised() -> None:
    remembered: Remembered[str, int] = Remembered()
    depths = []
    for _ in range(1000):
        with pytest.raises(Refused) as raised:
            remembered.value("k", _refuse)
        depths.append(len(traceback.extract_tb(raised.value.__traceback__)))
    assert depths[-1] == depths[0] <= 4, depths[-1]  # the test, value, get, _refuse
    assert [(k, type(v)) for k, v in remembered.found()] == [("k", Refused)]
