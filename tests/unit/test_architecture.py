"""STYLE.md rule 1, which import-linter cannot say: the domain imports the standard library
only and has no `async def`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).parents[2] / "src" / "mailvia" / "domain"
FILES = sorted(DOMAIN.glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_domain_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.AsyncFunctionDef), f"{path.name}: async def {node.name}"
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or name.startswith("mailvia.domain")
            assert allowed, f"{path.name} imports {name}"


def test_there_are_domain_modules() -> None:
    assert len(FILES) >= 10
