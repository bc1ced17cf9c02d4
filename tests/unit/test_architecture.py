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


SRC = DOMAIN.parent
DOORS = sorted([*(SRC / "web").rglob("*.py"), *(SRC / "ingress").rglob("*.py")])
# Attributes that would be a way around the use cases to the store or the vault.
BEHIND_THE_DOORS = {"store", "_store", "vault", "_vault"}


@pytest.mark.parametrize("path", DOORS, ids=lambda p: str(p.relative_to(SRC)))
def test_the_doors_never_reach_the_store(path: Path) -> None:
    """web/ and ingress/ call use cases only: no `.store` (or `.vault`) of anything. The
    import-linter contract "The doors" keeps their imports away from store/ and ports."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in BEHIND_THE_DOORS, f"{path.name}:{node.lineno} .{node.attr}"


def test_services_are_use_cases_all_set() -> None:
    """`Services` holds no store, and every field is set by app/wiring.py (no defaults, no None)."""
    from dataclasses import MISSING, fields

    from mailvia.outbox.services import Services

    for each in fields(Services):
        assert each.name != "store"
        assert each.default is MISSING and each.default_factory is MISSING, each.name
        annotation = str(each.type).replace(" ", "")
        assert not annotation.endswith("|None") and "Optional" not in annotation, each.name


@pytest.mark.parametrize(
    "path", sorted((SRC / "outbox").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_use_cases_take_narrow_ports(path: Path) -> None:
    """Each use case names a Protocol with just the store methods it calls, never `Store`."""
    if path.name == "ports.py":
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "mailvia.outbox.ports":
            names = {alias.name for alias in node.names}
            assert "Store" not in names, f"{path.name} depends on the whole Store"
