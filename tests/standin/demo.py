"""`make demo`: the whole pipeline, offline, on the stand-in for Tiny Core 11.

Builds the stand-in if its cache is cold, serves its mirror (and registry) on 127.0.0.1 for the
duration of the build, locks the stand-in recipe against them and runs the real
`pipeline.py build --locked`, then stops both servers. Only the recipe differs from
`make image`: same code, same stages.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import PipelineError
from appliance.paths import REPO
from appliance.run import Runner
from tests.standin import cache, mirror, registry, releases
from tests.standin.server import RECIPE, _answers, lock_argv, running

FRUGAL = REPO / "tests" / "standin" / "frugal.toml"


def recipe_args(overlay: Path, mode: str) -> list[str]:
    args = ["-c", str(RECIPE), "-c", str(overlay)]
    if mode == "frugal":
        args += ["-c", str(FRUGAL)]
    return args


def build_argv(overlay: Path, lock: Path, mode: str, extra: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "pipeline.py"), "build", *recipe_args(overlay, mode),
            "--lock", str(lock), "--locked", *extra]


@contextlib.contextmanager
def mirror_served(root: Path, port: int) -> Iterator[None]:
    """The stand-in's server on `port` for the block, unless one already answers there."""
    if _answers(f"http://{mirror.HOST}:{port}/"):
        print(f"demo: using the stand-in server already on port {port}", flush=True)
        yield
        return
    with running(root, port):
        print(f"demo: serving {root} on http://{mirror.HOST}:{port}/ for the build", flush=True)
        yield


@contextlib.contextmanager
def registry_served() -> Iterator[int]:
    """The stand-in registry on its default port (so the recipe overlay, and with it every
    stage key, is the same from one demo to the next), stopped afterwards."""
    port = registry.default_port()
    if registry.answers(port):
        registry.Registry(port, cache.component_dir("registry")).push()
        yield port
        return
    with registry.Registry(port, cache.component_dir("registry")).start():
        yield port


def demo(mode: str, port: int, extra: list[str]) -> int:
    built = mirror.build_all(port=port)
    runner = Runner(echo=lambda line: print(line, flush=True))
    lock = mirror.standin_build_dir() / "standin.lock"
    with registry_served(), mirror_served(built.mirror, port):
        overlay = mirror.recipe_overlay(built.kernel.release, releases.versions(runner), port)
        runner.run(lock_argv(overlay, lock), stream=True)
        result = runner.run(build_argv(overlay, lock, mode, extra), stream=True, check=False)
    print("demo: stand-in servers stopped", flush=True)
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.standin.demo",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("traditional", "frugal"), default="traditional",
                    help="install mode (default traditional)")
    ap.add_argument("--port", type=int, default=mirror.default_port(),
                    help=f"the stand-in server's port (default {mirror.DEFAULT_PORT})")
    args, extra = ap.parse_known_args(argv)
    try:
        return demo(args.mode, args.port, extra)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("demo: interrupted; the stand-in servers are stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
