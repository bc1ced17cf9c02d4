"""The command line: `mailvia serve|worker|migrate|admin|channel|send|queue|message|route`.

Each command takes the settings it uses as flags (`--data-dir`, `--db-url`, ...) over the
MAILVIA_* environment. Errors map to one line on stderr and an exit code (docs/cli.md):
2 bad input, 3 not found, 4 refused (forbidden, conflict), 5 unavailable, 1 other failure.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MailviaError,
    NotFound,
    OutboundRefused,
    ProviderRefused,
    ProviderUnavailable,
    RateLimited,
    SecretsUnavailable,
    StoreUnavailable,
    Unauthenticated,
)
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.services import Services

Builder = Callable[..., "Services"]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_CODES: tuple[tuple[type[MailviaError], int], ...] = (
    (InvalidInput, 2),
    (NotFound, 3),
    (Forbidden, 4),
    (Conflict, 4),
    (Unauthenticated, 4),
    (OutboundRefused, 4),
    (ProviderRefused, 4),
    (ProviderUnavailable, 5),
    (RateLimited, 4),  # a channel's budgets are spent for a test message
    (StoreUnavailable, 5),
    (SecretsUnavailable, 5),
)

# Settings every command that opens the service accepts as flags.
# Every command that builds the service may deliver, test or take mail in: the provider APIs'
# URLs and size limits are among its settings.
API_SETTINGS = ("gmail_api_url", "graph_api_url", "gmail_api_max_size", "graph_api_max_size")
STORE_SETTINGS = (
    "data_dir",
    "db_url",
    "master_key_file",
    "pool_relay",
    "allow_private_hosts",
    *API_SETTINGS,
)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"mailvia: {message}", err=True)
    sys.exit(code)


def exit_code(exc: MailviaError) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


def settings_options(*names: str) -> Callable[[F], F]:
    """Add `--<name>` flags for these settings; the command gets `settings: Settings`."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            overrides = {name: kwargs.pop(name) for name in names}
            try:
                kwargs["settings"] = Settings.load(overrides=overrides)
            except InvalidInput as exc:
                fail(str(exc), 2)
            return func(*args, **kwargs)

        for name in reversed(names):
            flag = "--" + name.replace("_", "-")
            help_text = f"Overrides MAILVIA_{name.upper()} (see docs/settings.md)."
            wrapper = click.option(flag, name, default=None, help=help_text)(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def emit(data: Any, *, as_json: bool, text: str | Callable[[], None]) -> None:
    """Print `data` as JSON, or the human text (a string, or a function that prints)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif isinstance(text, str):
        click.echo(text)
    else:
        text()


class Context:
    """What commands share: the builder from the composition root."""

    def __init__(self, build: Builder) -> None:
        self.build = build

    def services(self, settings: Settings, *, create_key: bool = False) -> Services:
        return self.build(settings, create_key=create_key)

    def using(self, settings: Settings, action: Callable[[Services], T]) -> T:
        """Build the services, run `action` with them, close them."""
        import asyncio  # here, not at the top: `--help` and the light commands need no loop

        services = self.services(settings, create_key=True)
        try:
            return action(services)
        finally:
            asyncio.run(services.aclose())


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailvia")
def cli() -> None:
    """mailvia sends each sender's mail through the right delivery channel."""


def run(build: Builder) -> None:
    """The console entry point, given the composition root's builder."""
    import mailvia.ingress.cli.admin
    import mailvia.ingress.cli.channel
    import mailvia.ingress.cli.mail
    import mailvia.ingress.cli.mend
    import mailvia.ingress.cli.secrets
    import mailvia.ingress.cli.serve
    import mailvia.ingress.cli.worker  # noqa: F401  (each registers its commands)

    try:
        cli.main(obj=Context(build), standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else 1)
    except MailviaError as exc:
        fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(130)
