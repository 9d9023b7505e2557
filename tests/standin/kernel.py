"""The stand-in kernel: Debian's linux-source-6.1 configured like 5.4.3-tinycore64, cached.

Built once per set of inputs (Debian source version, options.toml, kernel-extra.config, the
scripts/config call, BUILDER_VERSION) into cache_root()/standin/kernel/<key>/:
    bzImage, config, kernel.json, modroot/lib/modules/<release>/...
The build runs in a .build-* directory beside it and is renamed into place when complete, so
a killed build never looks finished; a cache hit runs no make at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import StageError, ToolError
from appliance.paths import cache_root
from appliance.run import Runner
from appliance.stages.kernel.stage import defined_symbols
from tests.standin import kernel_options
from tests.standin.kernelconfig import (
    OptionList,
    parse_config,
    scripts_config_argv,
    standin_settings,
    verify_settings,
)

# Bump when the build steps change in a way that changes the result.
BUILDER_VERSION = "1"
SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
ARCH = "x86_64"
MAKE_TIMEOUT_S = 3600
PROGRESS_EVERY_S = 30.0
# Fixed build stamps: `uname -v` of the same inputs does not change from build to build.
BUILD_ENV = {
    "ARCH": ARCH,
    "KBUILD_BUILD_USER": "standin",
    "KBUILD_BUILD_HOST": "standin",
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 2020",
}


@dataclass(frozen=True)
class StandinKernel:
    path: Path
    release: str
    info: dict

    @property
    def bzimage(self) -> Path:
        return self.path / "bzImage"

    @property
    def config(self) -> Path:
        return self.path / "config"

    @property
    def modroot(self) -> Path:
        return self.path / "modroot"

    @property
    def moddir(self) -> Path:
        return self.modroot / "lib" / "modules" / self.release

    @classmethod
    def load(cls, path: Path) -> StandinKernel:
        info = json.loads((path / "kernel.json").read_text(encoding="utf-8"))
        return cls(path, info["release"], info)


def kernel_cache_dir() -> Path:
    return cache_root() / "standin" / "kernel"


def log_dir() -> Path:
    return cache_root() / "standin" / "logs"


def cache_key(source_version: str, argv: list[str], modules: list[str]) -> str:
    """sha256 over everything that decides the built kernel.

    The settings themselves (the scripts/config argv), not the text of the data files: a
    comment or a kernel-check-only field in options.toml must not cost a 6-minute rebuild."""
    inputs = {
        "builder": BUILDER_VERSION,
        "arch": ARCH,
        "source": [SOURCE_PACKAGE, source_version],
        "scripts/config": argv,
        "modules": sorted(modules),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def source_version(runner: Runner) -> str:
    """Debian's version of the kernel source package, e.g. 6.1.192-2."""
    result = runner.run(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE], check=False)
    version = result.output.strip()
    if result.returncode != 0 or not version or not SOURCE_TARBALL.is_file():
        raise ToolError(
            f"the stand-in kernel needs Debian's {SOURCE_PACKAGE} ({SOURCE_TARBALL})",
            f"install it with `apt-get install {SOURCE_PACKAGE}` (or run `make deps`)",
        )
    return version


@dataclass(frozen=True)
class _Inputs:
    options: OptionList
    settings: dict[str, str]
    argv: list[str]
    version: str
    key: str


def _inputs(runner: Runner) -> _Inputs:
    options = kernel_options.load_options()
    settings = standin_settings(options, kernel_options.load_extra_config())
    argv = scripts_config_argv(settings)
    version = source_version(runner)
    modules = [o.module for o in options.options if o.module and o.tc11 == "m"]
    key = cache_key(version, argv, modules)
    return _Inputs(options, settings, argv, version, key)


def build_kernel(runner: Runner | None = None) -> StandinKernel:
    """The cached stand-in kernel for the current inputs, building it first if needed."""
    runner = runner or Runner(log_dir())
    inputs = _inputs(runner)
    key = inputs.key
    final = kernel_cache_dir() / key
    if (final / "kernel.json").is_file():
        return StandinKernel.load(final)
    _remove_dead_builds()
    work = kernel_cache_dir() / f".build-{key[:16]}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        out = _build(runner, work, inputs)
        if not final.exists():  # another process may have finished the same key first
            os.rename(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return StandinKernel.load(final)


def _build(runner: Runner, work: Path, inputs: _Inputs) -> Path:
    start = time.monotonic()
    runner.echo(f"stand-in kernel: cold build of {SOURCE_PACKAGE} (log: {log_dir()}/kernel.log)")
    runner.run(["tar", "-xJf", SOURCE_TARBALL, "-C", work], log="kernel")
    src = work / SOURCE_TARBALL.name.removesuffix(".tar.xz")
    _configure(runner, src, inputs.settings, inputs.argv)
    _make(runner, src, ["-j", str(os.cpu_count() or 1), "bzImage", "modules"])
    out = work / "out"
    out.mkdir()
    release = (src / "include" / "config" / "kernel.release").read_text().strip()
    _install_modules(runner, src, out, release)
    _check_modules(inputs.options, out / "modroot" / "lib" / "modules" / release)
    shutil.copy2(src / "arch" / "x86" / "boot" / "bzImage", out / "bzImage")
    shutil.copy2(src / ".config", out / "config")
    info = {
        "release": release,
        "key": inputs.key,
        "build_seconds": round(time.monotonic() - start, 1),
        "source": f"{SOURCE_PACKAGE} {inputs.version}",
        "builder_version": BUILDER_VERSION,
        "bzimage_bytes": (out / "bzImage").stat().st_size,
        "modules": len(list((out / "modroot").rglob("*.ko"))),
    }
    (out / "kernel.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    runner.echo(f"stand-in kernel {release} built in {info['build_seconds']:.0f} s")
    return out


def _configure(runner: Runner, src: Path, settings: dict[str, str], argv: list[str]) -> None:
    """tinyconfig, then our settings, then olddefconfig; fail unless every setting held."""
    _make(runner, src, ["tinyconfig"])
    runner.run([str(src / argv[0]), *argv[1:]], cwd=src, log="kernel")
    _make(runner, src, ["olddefconfig"])
    final = parse_config((src / ".config").read_text(encoding="utf-8"), ".config")
    problems = verify_settings(settings, final, defined_symbols(src))
    if problems:
        raise StageError(
            "the stand-in kernel's .config does not match kernel/options.toml and "
            "tests/standin/kernel-extra.config:\n  " + "\n  ".join(problems),
            "fix the data (a missing dependency goes into kernel-extra.config; a symbol "
            "renamed in 6.1 gets name_6_1 in options.toml)",
        )


def _make(runner: Runner, src: Path, targets: list[str]) -> None:
    runner.run(
        ["make", "-C", src, *targets],
        env=BUILD_ENV,
        log="kernel",
        timeout=MAKE_TIMEOUT_S,
        on_line=_Progress(runner),
    )


def _install_modules(runner: Runner, src: Path, out: Path, release: str) -> None:
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    _make(
        runner, src, ["modules_install", f"INSTALL_MOD_PATH={out / 'modroot'}", f"DEPMOD={depmod}"]
    )
    moddir = out / "modroot" / "lib" / "modules" / release
    # build/source point into the work tree, which is deleted: no dangling links in the cache.
    for link in ("build", "source"):
        if (moddir / link).is_symlink():
            (moddir / link).unlink()


def _check_modules(options: OptionList, moddir: Path) -> None:
    """Every module options.toml names was built (a module option can silently become y)."""
    built = {p.name.removesuffix(".ko") for p in moddir.rglob("*.ko")}
    missing = sorted({o.module for o in options.options if o.module and o.tc11 == "m"} - built)
    if missing:
        raise StageError(
            f"the stand-in kernel lacks modules named in options.toml: "
            f"{', '.join(missing)} (in {moddir})"
        )


class _Progress:
    """Echoes one line of kernel build progress every PROGRESS_EVERY_S, not every line."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.steps = 0
        self.last = time.monotonic()

    def __call__(self, line: str) -> None:
        self.steps += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.runner.echo(f"  kernel: {self.steps} steps, at {line.strip()[:90]}")


def _remove_dead_builds() -> None:
    """Delete .build-* directories left by killed builds (their process is gone)."""
    for path in kernel_cache_dir().glob(".build-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's
