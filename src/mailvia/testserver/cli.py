"""The `mailvia testserver` command: parse options, run the server until SIGINT/SIGTERM.

Side effects: listens on a port, writes the maildir, prints `maildir DIR`, `ca-cert PATH` (with
--self-signed) and finally `listening smtp[s]://HOST:PORT`, each flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mailvia.testserver.faults import STAGES
from mailvia.testserver.server import TestServer


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
    auth: tuple[tuple[str, str], ...] = ()
    faults: tuple[str, ...] = ()
    faults_file: Path | None = None
    maildir: Path | None = None


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
        server = _server(options)
    except ValueError as error:
        print(f"mailvia testserver: error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(server, out or sys.stdout))
    except OSError as error:
        print(f"mailvia testserver: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


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
        faults=options.faults,
        faults_file=options.faults_file,
        maildir=options.maildir,
        keep_maildir=True,
    )


async def _serve(server: TestServer, out: TextIO) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread there are no signal handlers; KeyboardInterrupt still stops.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
    async with server:
        print(f"maildir {server.maildir}", file=out, flush=True)
        if server.ca_cert_path is not None:
            print(f"ca-cert {server.ca_cert_path}", file=out, flush=True)
        print(f"listening {server.url}", file=out, flush=True)
        await stopping.wait()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailvia testserver",
        description="A fault-injecting SMTP server for tests.",
        epilog=f"STAGE: {', '.join(STAGES)}. ACTION: 'CODE ENHANCED text', drop, stall, "
        "stall:SECONDS, noreply. STAGE*N=ACTION applies to the first N commands only.",
    )
    add = parser.add_argument
    add("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="port 0 picks a free port")
    add("--tls-cert", type=Path, metavar="F", help="PEM certificate chain")
    add("--tls-key", type=Path, metavar="F", help="PEM private key")
    add("--self-signed", action="store_true", help="make a CA and a 127.0.0.1 certificate")
    add("--no-starttls", action="store_true", help="do not offer STARTTLS")
    add("--implicit-tls", action="store_true", help="TLS from the first byte (smtps)")
    add("--auth", action="append", default=[], metavar="USER:PASS", help="require AUTH")
    add("--fault", action="append", default=[], metavar="STAGE=ACTION")
    add("--faults-file", type=Path, metavar="F", help="re-read for each connection")
    add("--maildir", type=Path, metavar="DIR", help="default: a new temporary directory")
    return parser


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    host, _, port_text = str(args.listen).rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        parser.error(f"--listen {args.listen!r}: expected HOST:PORT")
    auth: list[tuple[str, str]] = []
    for pair in args.auth:
        user, colon, password = str(pair).partition(":")
        if not user or not colon:
            parser.error(f"--auth {pair!r}: expected USER:PASS")
        auth.append((user, password))
    return Options(
        host=host,
        port=int(port_text),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        self_signed=args.self_signed,
        starttls=not args.no_starttls,
        implicit_tls=args.implicit_tls,
        auth=tuple(auth),
        faults=tuple(args.fault),
        faults_file=args.faults_file,
        maildir=args.maildir,
    )
