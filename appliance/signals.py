"""SIGTERM and SIGHUP end a run exactly as Ctrl-C does.

CI timeouts, `timeout make image` and service managers send SIGTERM; a closed terminal sends
SIGHUP. Python's default for both is to die on the spot, which skips every `finally` and
leaves Packer, QEMU and make running in their own sessions. Raising an exception instead
runs the same cleanup as KeyboardInterrupt (Runner kills the child's process group, stages
never rename a half-finished work folder).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP; a KeyboardInterrupt so every Ctrl-C path cleans up for it too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process killed by it."""
    signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    return 128 + int(signum)


def describe(exc: BaseException) -> str:
    return f"stopped by {exc.args[0]}" if isinstance(exc, Terminated) else "interrupted"


def _raise_once(signum: int, _frame) -> None:
    # Later TERM/HUP (a supervisor repeating itself) must not break off the cleanup that
    # the first one started; SIGKILL remains for a user who wants no cleanup.
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_once) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
