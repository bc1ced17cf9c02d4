"""The test server's command line: a mistyped option is refused with the one meant."""

from __future__ import annotations

import pytest

from mailvia.testserver.cli import main


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("--no-pipelinig", "--no-pipelining"), ("--faults-fle=x", "--faults-file")],
)
def test_a_mistyped_option_is_refused_with_a_suggestion(
    typed: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--self-signed", typed]) == 2
    error = capsys.readouterr().err
    assert f"unrecognized arguments: {typed}" in error
    assert f"(did you mean {meant}?)" in error


def test_an_unknown_word_without_a_likeness_gets_no_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--zzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err
