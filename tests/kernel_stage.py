"""The kernel stage run as a user runs it, once per pytest process, for the tools and vm tests.

The stand-in mirror is served on a free port for the rest of the process; the real
`pipeline.py lock` and `pipeline.py build --until kernel --locked` run with
`-c tests/standin/recipe.toml -c <overlay for that port> [-c <test overlay>]`, building
into a temporary APPLIANCE_BUILD. APPLIANCE_CACHE stays as it is, so the stand-in and the
downloads are reused. The test overlay asks for the full rebuild where wanted, and drops the
recipe's container images: pinning them needs the stand-in's registry, which no stage up to
the kernel uses.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from appliance.paths import REPO
from appliance.run import Runner
from tests.standin import mirror, registry, releases, server

RECIPE = REPO / "tests" / "standin" / "recipe.toml"
PIPELINE_TIMEOUT_S = 1800


@dataclass
class StageRun:
    """A stand-in recipe served on a port, with its lock, overlay and build folder."""

    built: mirror.Built
    url: str
    root: Path
    extra: tuple[str, ...] = ()  # more -c files after the stand-in's two

    @property
    def kver(self) -> str:
        return self.built.kernel.release

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def kernel(self) -> Path:
        return self.build / "kernel"

    def pipeline(self, verb: str, *args: str) -> subprocess.CompletedProcess:
        port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        overlay = self.root / "standin.toml"
        if not overlay.exists():
            versions = releases.versions(Runner(echo=lambda line: None))
            overlay.write_text(mirror.overlay_text(self.kver, versions, port))
        configs = ["-c", str(RECIPE), "-c", str(overlay)]
        for path in self.extra:
            configs += ["-c", path]
        env = {**os.environ, "APPLIANCE_BUILD": str(self.build)}
        return subprocess.run(
            [sys.executable, str(REPO / "pipeline.py"), verb, *configs,
             "--lock", str(self.root / "standin.lock"), *args],
            env=env, capture_output=True, text=True, timeout=PIPELINE_TIMEOUT_S)


@dataclass
class ColdBuild:
    run: StageRun
    lock: subprocess.CompletedProcess
    result: subprocess.CompletedProcess
    seconds: float


_served: dict[str, object] = {}
_cold: dict[str, ColdBuild] = {}


def serve() -> tuple[mirror.Built, str]:
    """The stand-in (built or cached) served on a free port until the process exits."""
    if "url" not in _served:
        built = mirror.build_all(Runner(echo=lambda line: None))
        registry.ensure_running()  # the recipe's images are pinned from it (overlay names it)
        httpd = server.make_server(built.mirror, 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        atexit.register(httpd.server_close)
        atexit.register(httpd.shutdown)
        _served.update(built=built, url=f"http://{mirror.HOST}:{httpd.server_address[1]}/")
    return _served["built"], _served["url"]  # type: ignore[return-value]


def stage_run(root: Path, *extra: str) -> StageRun:
    built, url = serve()
    root.mkdir(parents=True, exist_ok=True)
    return StageRun(built, url, root, extra)


def extra_overlay(root: Path, full: bool) -> list[str]:
    """The -c file a kernel test adds: `images = []` (a top-level key, so first) when the
    stand-in recipe has images, and the full rebuild when asked for."""
    text = "images = []\n" if "images" in tomllib.loads(RECIPE.read_text()) else ""
    text += '[kernel]\nrebuild = "full"\n' if full else ""
    if not text:
        return []
    path = root / "kernel-test.toml"
    path.write_text(text)
    return [str(path)]


def cold_build(root: Path, full: bool = False) -> ColdBuild:
    """lock + the first `build --until kernel` of the stand-in recipe (modules only, or the
    full rebuild); the first caller's `root` holds it, later callers (the vm tests after the
    tools tests) get the same one."""
    kind = "full" if full else "modules"
    if kind not in _cold:
        root.mkdir(parents=True, exist_ok=True)
        run = stage_run(root, *extra_overlay(root, full))
        locked = run.pipeline("lock", "--accept-first-use")  # the stand-in: see server.lock_argv
        start = time.monotonic()
        result = run.pipeline("build", "--until", "kernel", "--locked")
        _cold[kind] = ColdBuild(run, locked, result, time.monotonic() - start)
    return _cold[kind]
