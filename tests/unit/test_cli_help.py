"""Every CLI command says what it does in its group's --help listing and its own --help."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import click
import pytest

from mailvia.ingress.cli.root import cli

for _name in ("admin", "channel", "mail", "mend", "secrets", "serve", "worker"):
    importlib.import_module(f"mailvia.ingress.cli.{_name}")  # each registers its commands


def commands(group: click.Group, path: str = "mailvia") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")


ALL = list(commands(cli))


@pytest.mark.parametrize(("path", "command"), ALL, ids=[path for path, _ in ALL])
def test_every_command_has_help(path: str, command: click.Command) -> None:
    assert command.get_short_help_str(limit=80).strip(), f"{path}: no help in its group's list"
    assert (command.help or "").strip(), f"{path} --help: says nothing about what it does"


@pytest.mark.parametrize(("path", "command"), ALL, ids=[path for path, _ in ALL])
def test_every_option_says_what_it_takes(path: str, command: click.Command) -> None:
    bare = [
        p.opts[-1]
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert not bare, f"{path} --help: options without help: {bare}"


def test_every_testserver_option_says_what_it_takes() -> None:
    from mailvia.testserver.cli import _parser  # argparse: the test server stands alone

    bare = [
        a.option_strings[-1]
        for a in _parser()._actions
        if a.option_strings and not (a.help or "").strip()
    ]
    assert not bare, f"mailvia testserver --help: options without help: {bare}"
