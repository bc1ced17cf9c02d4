"""Shared fixtures. Under MAILVIA_CI=1 a skipped test fails the run: CI has every part."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator

import pytest

from support.databases import (  # noqa: F401
    migrated_pg_url,
    migrated_store_url,
    pg_template,
    pg_url,
    store_url,
)
from support.fake_providers import fake_providers, fake_providers_smtp  # noqa: F401

IN_CI = os.environ.get("MAILVIA_CI") == "1"


def require_program(program: str, package: str) -> str:
    """The program's path, or skip naming the Debian package that provides it."""
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None
    )
    if path is None:
        pytest.skip(f"{program} not found: install the Debian package {package}")
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under MAILVIA_CI=1 (every test must run in CI): {reason}"
    return report
