"""The `mailvia testserver` command: parse options, run the server until SIGINT/SIGTERM.

Side effects: listens on a port, writes the maildir, prints `maildir DIR`, `ca-cert PATH` (with
--self-signed) and finally `listening smtp[s]://HOST:PORT`, each flushed. With
--fake-providers it serves fake Google and Microsoft on --listen-http (and SMTP with XOAUTH2
only when --listen is given), printing the `MAILVIA_...=URL` settings that point mailvia at
it before `listening smtp://...` and, last, `listening http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

from mailvia.testserver.fake import ClientApp, FakeOptions, FakeProviders
from mailvia.testserver.faults import HTTP_STAGES, STAGES
from mailvia.testserver.server import ServerOptions, TestServer

_ROTATION = {
    "microsoft": {"google": False, "microsoft": True},
    "google": {"google": True, "microsoft": False},
    "both": {"google": True, "microsoft": True},
    "none": {"google": False, "microsoft": False},
}


@dataclass(frozen=True)
class Options:
    """Everything `mailvia testserver` can be told."""

    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    self_signed: bool = False
    starttls: bool = True
    implicit_tls: bool = False
    pipelining: bool = True
    auth: tuple[tuple[str, str], ...] = ()
    faults: tuple[str, ...] = ()
    faults_file: Path | None = None
    maildir: Path | None = None
    smtp: bool = True  # with fake_providers, only when --listen is given
    fake_providers: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 0
    fake: FakeOptions = field(default_factory=FakeOptions)


def main(argv: list[str]) -> int:
    """Parse `argv` (without the program name), run until SIGINT/SIGTERM; return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        options = _options(parser, args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    return run(options)


def run(options: Options, *, out: TextIO | None = None) -> int:
    """Run the server for `options` until SIGINT/SIGTERM. Returns 0, 1 (cannot listen), 2 (bad
    options); errors are printed on stderr."""
    try:
        server = _fake(options) if options.fake_providers else _server(options)
    except ValueError as error:
        print(f"mailvia testserver: error: {error}", file=sys.stderr)
        return 2
    try:
        if isinstance(server, FakeProviders):
            asyncio.run(_serve_fake(server, out or sys.stdout))
        else:
            asyncio.run(_serve(server, out or sys.stdout))
    except OSError as error:
        print(f"mailvia testserver: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _smtp_options(options: Options) -> ServerOptions:
    return ServerOptions(
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        self_signed=options.self_signed,
        starttls=options.starttls,
        implicit_tls=options.implicit_tls,
        auth=dict(options.auth) or None,
        pipelining=options.pipelining,
    )


def _fake(options: Options) -> FakeProviders:
    return FakeProviders(
        options.http_host,
        options.http_port,
        options=options.fake,
        smtp_port=options.port if options.smtp else None,
        smtp_options=_smtp_options(options),
        maildir=options.maildir,
        keep_maildir=True,
    )


def _server(options: Options) -> TestServer:
    return TestServer(
        options.host,
        options.port,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        self_signed=options.self_signed,
        starttls=options.starttls,
        implicit_tls=options.implicit_tls,
        auth=dict(options.auth) or None,
        pipelining=options.pipelining,
        faults=options.faults,
        faults_file=options.faults_file,
        maildir=options.maildir,
        keep_maildir=True,
    )


async def _serve(server: TestServer, out: TextIO) -> None:
    stopping = _stop_on_signals()
    async with server:
        print(f"maildir {server.maildir}", file=out, flush=True)
        if server.ca_cert_path is not None:
            print(f"ca-cert {server.ca_cert_path}", file=out, flush=True)
        print(f"listening {server.url}", file=out, flush=True)
        await stopping.wait()


async def _serve_fake(fake: FakeProviders, out: TextIO) -> None:
    stopping = _stop_on_signals()
    async with fake:
        print(f"maildir {fake.maildir}", file=out, flush=True)
        if fake.smtp is not None and fake.smtp.ca_cert_path is not None:
            print(f"ca-cert {fake.smtp.ca_cert_path}", file=out, flush=True)
        for name, value in fake.settings.items():
            print(f"{name}={value}", file=out, flush=True)
        if fake.smtp_url is not None:
            print(f"listening {fake.smtp_url}", file=out, flush=True)
        print(f"listening {fake.origin}", file=out, flush=True)
        await stopping.wait()


def _stop_on_signals() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread there are no signal handlers; KeyboardInterrupt still stops.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
    return stopping


class _Parser(argparse.ArgumentParser):
    """argparse that suggests the option meant for a mistyped one (`--no-pipelinig`)."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            known = [name for name in self._option_string_actions if name.startswith("--")]
            for word in message[len(prefix) :].split():
                guess = difflib.get_close_matches(word.partition("=")[0], known, n=1)
                if word.startswith("--") and guess:
                    message += f" (did you mean {guess[0]}?)"
                    break
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mailvia testserver",
        description="A fault-injecting SMTP server for tests; with --fake-providers, also "
        "fake Google and Microsoft (OAuth, Gmail API, Graph) on --listen-http.",
        epilog=f"SMTP STAGE: {', '.join(STAGES)}; ACTION: 'CODE ENHANCED text', drop, stall, "
        f"stall:SECONDS, noreply (body: drop or stall only; starttls also badtls). "
        f"HTTP STAGE: {', '.join(HTTP_STAGES)}; ACTION: "
        "'CODE [REASON] [retry-after=N]', REASON (e.g. invalid_grant), drop, stall, "
        "stall:SECONDS. STAGE*N=ACTION applies to the first N commands or requests only.",
    )
    add = parser.add_argument
    add(
        "--listen",
        metavar="HOST:PORT",
        help="SMTP; port 0 picks a free port (default "
        "127.0.0.1:0; with --fake-providers, no SMTP unless given)",
    )
    add("--tls-cert", type=Path, metavar="F", help="PEM certificate chain")
    add("--tls-key", type=Path, metavar="F", help="PEM private key")
    add("--self-signed", action="store_true", help="make a CA and a 127.0.0.1 certificate")
    add("--no-starttls", action="store_true", help="do not offer STARTTLS")
    add("--implicit-tls", action="store_true", help="TLS from the first byte (smtps)")
    add("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    add("--auth", action="append", default=[], metavar="USER:PASS", help="require AUTH")
    add(
        "--fault",
        action="append",
        default=[],
        metavar="STAGE=ACTION",
        help="a fault to inject (repeatable; STAGE and ACTION below)",
    )
    add("--faults-file", type=Path, metavar="F", help="re-read for each connection or request")
    add("--maildir", type=Path, metavar="DIR", help="default: a new temporary directory")
    _add_fake_options(parser)
    return parser


def _add_fake_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fake providers (with --fake-providers)")
    add = group.add_argument
    add("--fake-providers", action="store_true", help="serve fake Google and Microsoft")
    add("--listen-http", metavar="HOST:PORT", help="their HTTP port (default 127.0.0.1:0)")
    add("--account", metavar="EMAIL", help="prefills the consent page without login_hint")
    add(
        "--client",
        action="append",
        default=[],
        metavar="PROVIDER=ID:SECRET",
        help="a known OAuth client (then only known ones); default: any",
    )
    add("--token-lifetime", type=int, metavar="SECONDS", help="access tokens (default 3600)")
    add(
        "--rotate-refresh-tokens",
        choices=sorted(_ROTATION),
        help="which provider returns a new refresh token at each refresh (default microsoft)",
    )
    add(
        "--retire-rotated-refresh-tokens",
        action="store_true",
        help="a rotated-out refresh token stops working (default: it stays valid)",
    )
    add("--gmail-max-bytes", type=int, metavar="N", help="message size (default 36700160)")
    add("--gmail-json-max-bytes", type=int, metavar="N", help="JSON body (default 5 MiB)")
    add("--graph-max-bytes", type=int, metavar="N", help="sendMail body (default 4 MiB)")


def _host_port(parser: argparse.ArgumentParser, flag: str, text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        parser.error(f"{flag} {text!r}: expected HOST:PORT")
    return host, int(port_text)


def _fake_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> FakeOptions:
    clients: list[ClientApp] = []
    for spec in args.client:
        provider, eq, rest = str(spec).partition("=")
        client_id, colon, secret = rest.partition(":")
        if provider not in ("google", "microsoft") or not eq or not client_id or not colon:
            parser.error(f"--client {spec!r}: expected google|microsoft=ID:SECRET")
        clients.append(ClientApp(provider, client_id, secret))
    lifetime = 3600 if args.token_lifetime is None else args.token_lifetime
    if lifetime < 1:
        parser.error("--token-lifetime: expected a positive number of seconds")
    limits = {
        name: value
        for name in ("gmail_max_bytes", "gmail_json_max_bytes", "graph_max_bytes")
        if (value := getattr(args, name)) is not None
    }
    if any(value < 1 for value in limits.values()):
        parser.error("--gmail-max-bytes, --gmail-json-max-bytes, --graph-max-bytes: expected N > 0")
    return FakeOptions(
        account=args.account,
        clients=tuple(clients),
        token_lifetime=lifetime,
        rotate_refresh_tokens=_ROTATION[args.rotate_refresh_tokens or "microsoft"],
        retire_rotated_refresh_tokens=args.retire_rotated_refresh_tokens,
        faults=tuple(args.fault),
        faults_file=args.faults_file,
        **limits,
    )


_FAKE_ONLY = (
    "listen_http",
    "token_lifetime",
    "rotate_refresh_tokens",
    "account",
    "client",
    "retire_rotated_refresh_tokens",
    "gmail_max_bytes",
    "gmail_json_max_bytes",
    "graph_max_bytes",
)


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    host, port = _host_port(parser, "--listen", args.listen or "127.0.0.1:0")
    if not args.fake_providers:
        given = [name for name in _FAKE_ONLY if getattr(args, name)]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --fake-providers")
    http_host, http_port = _host_port(parser, "--listen-http", args.listen_http or "127.0.0.1:0")
    auth: list[tuple[str, str]] = []
    for pair in args.auth:
        user, colon, password = str(pair).partition(":")
        if not user or not colon:
            parser.error(f"--auth {pair!r}: expected USER:PASS")
        auth.append((user, password))
    return Options(
        host=host,
        port=port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        self_signed=args.self_signed,
        starttls=not args.no_starttls,
        implicit_tls=args.implicit_tls,
        pipelining=not args.no_pipelining,
        auth=tuple(auth),
        faults=tuple(args.fault),
        faults_file=args.faults_file,
        maildir=args.maildir,
        smtp=not args.fake_providers or args.listen is not None,
        fake_providers=args.fake_providers,
        http_host=http_host,
        http_port=http_port,
        fake=_fake_options(parser, args) if args.fake_providers else FakeOptions(),
    )
