"""Console messages: short, prefixed, to stderr (stdout stays for JSON and tables)."""

from __future__ import annotations

import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def say(message: str) -> None:
    if not _quiet:
        print(f"==> {message}", file=sys.stderr, flush=True)


def detail(message: str) -> None:
    if not _quiet:
        print(f"    {message}", file=sys.stderr, flush=True)


def command(line: str) -> None:
    """A command the runner starts (`+ cmd`) or its streamed output: progress, not a result,
    so stderr, and not under -q."""
    if not _quiet:
        print(line, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
