"""`python -m tests.standin <command>`: build the stand-in for Tiny Core 11.

Commands: kernel (build or reuse the stand-in kernel); build-iso (the stand-in ISO,
tests/standin/iso.py); build, serve and lock (tests/standin/server.py).
"""

from __future__ import annotations

import argparse
import sys
import time

from appliance.errors import PipelineError
from tests.standin.server import register_commands  # build, serve, lock


def _kernel(_args: argparse.Namespace) -> None:
    from tests.standin.kernel import build_kernel

    start = time.monotonic()
    kernel = build_kernel()
    print(f"release: {kernel.release}")
    print(f"path: {kernel.path}")
    print(
        f"time: {time.monotonic() - start:.1f} s (cold build took "
        f"{kernel.info['build_seconds']:.0f} s)"
    )


# --- build-iso (tests/standin/iso.py; owned by the rootfs/ISO helper) ---------------------
def _build_iso(_args: argparse.Namespace) -> None:
    from tests.standin.iso import build_iso

    start = time.monotonic()
    iso = build_iso()
    print(f"iso: {iso} ({iso.stat().st_size} bytes) in {time.monotonic() - start:.1f} s")


def _register_build_iso(sub) -> None:
    cmd = sub.add_parser(
        "build-iso",
        help="build (or reuse from the cache) CorePure64-11.1.iso with its kernel and "
        "corepure64.gz; print its path",
    )
    cmd.set_defaults(func=_build_iso)


# --- end of build-iso ---------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m tests.standin", description=__doc__.split("\n")[0]
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="command")
    kernel = sub.add_parser(
        "kernel",
        help="build (or reuse from the cache) the stand-in kernel; print its release and path",
    )
    kernel.set_defaults(func=_kernel)
    register_commands(sub)
    _register_build_iso(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
