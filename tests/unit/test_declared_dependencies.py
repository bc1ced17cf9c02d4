"""The dependencies pyproject.toml declares are the ones mailvia's code imports: every
top-level import of src/mailvia outside the standard library belongs to a declared
distribution, and every declared distribution is imported, or named below with the reason it
is needed without being imported. A library swapped for another (typer declared, click
imported) fails here, not on a new user's machine."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "mailvia"
# Needed at run time though no module of mailvia imports them by name.
UNIMPORTED = {
    "python-multipart": "FastAPI's parser of the pages' form posts",
    "httptools": "uvicorn's HTTP/1.1 parser in C, which serve's uvicorn picks when installed",
    "h11": "uvicorn's h11 protocol, which the test server's fake HTTP server names",
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        normalized(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def imported_modules() -> dict[str, str]:
    """Each top-level module imported outside the standard library, with one file that does."""
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "mailvia" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def distributions_of(modules: dict[str, str]) -> dict[str, str]:
    """The installed distribution of each imported module (the module's name when none is)."""
    installed = packages_distributions()
    return {
        module: normalized(installed[module][0]) if module in installed else module
        for module in modules
    }


def test_every_imported_library_is_declared() -> None:
    modules = imported_modules()
    assert {"click", "pydantic", "fastapi", "sqlalchemy"} <= modules.keys()  # the walk works
    undeclared = {
        f"{module} (from {where}, distribution {dist})"
        for (module, where), dist in zip(
            modules.items(), distributions_of(modules).values(), strict=True
        )
        if dist not in declared()
    }
    assert not undeclared, f"imported but not in pyproject's dependencies: {sorted(undeclared)}"


def test_every_declared_library_is_imported_or_needed_without_import() -> None:
    used = set(distributions_of(imported_modules()).values())
    unused = declared() - used - set(UNIMPORTED)
    assert not unused, f"declared in pyproject but never imported: {sorted(unused)}"
    assert not set(UNIMPORTED) & used, "imported after all: drop it from UNIMPORTED"
    assert set(UNIMPORTED) <= declared()
