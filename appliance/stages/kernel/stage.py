"""The kernel stage: the modules tc11's kernel lacks (overlay), or the whole kernel rebuilt.

From the pinned source tarball and config (fetch outputs `kernel/source`, `kernel/config`):
unpack, `.config` + kernel/ fragments, `make olddefconfig`, check that every setting held and
that the tree builds the recipe's kernel release, then either `make modules_prepare` and
`make M=<dir> modules` per module (kernel/modules.toml), or, with `kernel.rebuild = "full"`,
`make bzImage modules` with kernel/containers.config on top. Each module's vermagic is
checked before it is packaged Tiny Core style (appliance/stages/kernel/package.py). A tree
whose objtool the host's GCC rejects (tc11's 5.4.3 on GCC >= 12) is built with gcc-11
(appliance/stages/kernel/toolchain.py); the progress line says which compiler and why.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance import log
from appliance.config import NAME, Recipe
from appliance.engine import Stage, outputs_of
from appliance.errors import StageError, ToolError
from appliance.paths import data_dir
from appliance.run import Result, Runner
from appliance.stages.kernel import check as kernel
from appliance.stages.kernel import package, toolchain
from appliance.stages.kernel.kconfig import (
    SYMBOL,
    ConfigFormatError,
    kconfig_symbols,
    parse_config,
    scripts_config_argv,
    verify_settings,
)

VERSION = 2  # bump when a change here changes what the stage produces
TOOLS = (("make", "--version"), ("gcc", "--version"), ("mksquashfs", "-version"))
MODULES_FILE = data_dir("kernel") / "modules.toml"
CONTAINERS_FRAGMENT = data_dir("kernel") / "containers.config"
LOG = "kernel"
PROGRESS_EVERY_S = 30.0
STEP_TIMEOUT_S = 3600
FULL_BUILD_TIMEOUT_S = 6 * 3600  # tc11's whole config on a small machine
TOOLCHAIN_HINT = (
    "the kernel tree's own build tools (objtool, modpost) did not build or run with the "
    "compiler named in the 'kernel: compiler' line; an old tree (tc11's 5.4.3 was built with "
    "gcc 9.2) may need an older GCC. "
    "Nothing was packaged; the unpacked tree stays in kernel.tmp/src under the build folder "
    "(build/ or $APPLIANCE_BUILD) until the next run")

_MODULE_KEYS = ("options", "dir", "files", "description")
_REL_PATH = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")


@dataclass(frozen=True)
class ModuleSpec:
    """One [module.NAME] of kernel/modules.toml."""

    name: str
    options: tuple[tuple[str, str], ...]  # (symbol, "m")
    dir: str
    files: tuple[str, ...]
    description: str

    @property
    def sources(self) -> list[str]:
        """Each .ko relative to the tree's top (and to lib/modules/<kver>/kernel/)."""
        return [f"{self.dir}/{f}" for f in self.files]


def parse_modules(text: str, source: str = "modules.toml") -> dict[str, ModuleSpec]:
    """kernel/modules.toml, validated; every problem is reported at once."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFormatError(f"{source}: {exc}") from None
    problems = [f"unknown top-level key {k!r} (expected [module.NAME])" for k in data
                if k != "module"]
    specs = {}
    for name, raw in data.get("module", {}).items():
        spec = _module(name, raw, problems)
        if spec is not None:
            specs[name] = spec
    if problems:
        raise ConfigFormatError(f"{source}:\n  " + "\n  ".join(problems))
    return specs


def _safe_path(value: object) -> bool:
    """A plain relative path inside the tree: a recipe file must not point outside it."""
    return (isinstance(value, str) and bool(_REL_PATH.match(value))
            and ".." not in value.split("/"))


def _module(name: str, raw: object, problems: list[str]) -> ModuleSpec | None:
    where = f"module.{name}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table")
        return None
    before = len(problems)
    if not NAME.match(name):
        problems.append(f"{where}: not a module name (letters, digits, . _ + -)")
    problems += [f"{where}: unknown key {k!r}" for k in raw if k not in _MODULE_KEYS]
    problems += [f"{where}: missing {k!r}" for k in _MODULE_KEYS if not raw.get(k)]
    options = raw.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"{where}: options must be a table of SYMBOL = \"m\"")
        options = {}
    for symbol, value in options.items():
        if not re.fullmatch(SYMBOL, symbol) or symbol.startswith("CONFIG_"):
            problems.append(f"{where}: option {symbol!r} must be a symbol without CONFIG_")
        if value != "m":
            problems.append(f"{where}: {symbol} = {value!r}: a module build sets \"m\"")
    if "dir" in raw and not _safe_path(raw["dir"]):
        problems.append(f"{where}: dir {raw['dir']!r} must be a relative path in the tree")
    files = raw.get("files", [])
    if not isinstance(files, list) or not all(_safe_path(f) and f.endswith(".ko")
                                              for f in files):
        problems.append(f"{where}: files must be a list of .ko paths relative to dir")
    if len(problems) > before:
        return None
    return ModuleSpec(name, tuple(options.items()), raw["dir"], tuple(files),
                      str(raw["description"]))


def load_modules(path: Path = MODULES_FILE) -> dict[str, ModuleSpec]:
    try:
        return parse_modules(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ConfigFormatError) as exc:
        raise StageError(f"kernel module list unreadable: {exc}") from None


def load_fragment(path: Path = CONTAINERS_FRAGMENT) -> dict[str, str]:
    try:
        return parse_config(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ConfigFormatError) as exc:
        raise StageError(f"kernel config fragment unreadable: {exc}") from None


# --- what the recipe asks for -------------------------------------------------------------


def idle_reason(recipe: Recipe) -> str | None:
    """Why the stage has nothing to do, or None when it builds."""
    if recipe.kernel.modules or recipe.kernel.rebuild == "full":
        return None
    return "no kernel module build requested (kernel.modules is empty, kernel.rebuild = none)"


def key_slice(recipe: Recipe) -> dict | None:
    """The recipe fields the stage reads (its pinned inputs are keyed by the engine)."""
    if idle_reason(recipe):
        return None
    full = recipe.kernel.rebuild == "full"
    return {"kernel": recipe.kernel.model_dump(mode="json"), "release": recipe.tinycore.kernel,
            "source_date_epoch": recipe.effective_source_date_epoch(),
            # a full rebuild replaces the fetched module extensions and keeps their .dep
            "extensions": list(recipe.tinycore.extensions) if full else None}


def settings_for(modules: list[str], rebuild: str, specs: dict[str, ModuleSpec],
                 fragment: dict[str, str]) -> dict[str, str]:
    """Every symbol the stage sets: the full-rebuild fragment, then each module's options."""
    unknown = [m for m in modules if m not in specs]
    if unknown:
        raise StageError(f"kernel.modules: no build recipe for {', '.join(unknown)} in "
                         "kernel/modules.toml",
                         f"known modules: {', '.join(sorted(specs)) or 'none'}")
    settings = dict(fragment) if rebuild == "full" else {}
    for name in modules:
        for symbol, value in specs[name].options:
            if settings.setdefault(symbol, value) != value:
                raise StageError(f"kernel/modules.toml: {name} sets {symbol}={value}, but "
                                 f"kernel/containers.config sets {symbol}={settings[symbol]}")
    return settings


# --- checks (pure) -------------------------------------------------------------------------


def top_folder(root: Path, source_name: str) -> Path:
    """The one folder a kernel tarball unpacks to (linux-5.4.3/, linux-source-6.1/, ...)."""
    entries = sorted(root.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        shown = ", ".join(e.name for e in entries[:5]) or "nothing"
        raise StageError(f"{source_name}: expected a single top-level folder, found {shown}",
                         "kernel.source must be a kernel source tarball "
                         "(tc11: release/src/kernel/linux-5.4.3-patched.txz)")
    tree = entries[0]
    if not ((tree / "Makefile").is_file() and (tree / "Kconfig").is_file()):
        raise StageError(f"{source_name}: {tree.name}/ has no Makefile and Kconfig at its top: "
                         "not a kernel source tree")
    return tree


def check_release(output: str, want: str, source_name: str, config_name: str) -> str:
    """`make -s kernelrelease` must print the recipe's tinycore.kernel."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    got = lines[-1] if lines else ""
    if got != want:
        raise StageError(
            f"kernel: {source_name} with {config_name} builds release {got!r}, but the recipe's "
            f"tinycore.kernel is {want!r}: the source/config do not match the ISO's kernel, and "
            "modules built from them would not load",
            "point kernel.source and kernel.config at the ISO kernel's own files "
            "(release/src/kernel/ of the same Tiny Core release), or fix tinycore.kernel")
    return got


# --- argv builders (pure) ----------------------------------------------------------------


def tar_argv(tarball: Path, dest: Path) -> list[str]:
    # tar detects the compression (.txz, .tar.xz, .tar.gz); files belong to whoever builds
    return ["tar", "-xf", str(tarball), "-C", str(dest), "--no-same-owner"]


def make_argv(src: Path, targets: list[str], jobs: int | None = None,
              cc: tuple[str, ...] = ()) -> list[str]:
    """cc: CC=/HOSTCC= on the command line (the kernel's Makefile overrides the environment's)."""
    return ["make", "--no-print-directory", "-C", str(src), *cc,
            *(["-j", str(jobs)] if jobs else []), *targets]


def module_make_argv(src: Path, folder: str, jobs: int, cc: tuple[str, ...] = ()) -> list[str]:
    # The tree has no Module.symvers (tc11's has none either): modpost cannot resolve the
    # kernel's symbols, so they are warnings; the kernel resolves them at load.
    return make_argv(src, [f"M={folder}", "KBUILD_MODPOST_WARN=1", "modules"], jobs, cc)


def modules_install_argv(src: Path, dest: Path, depmod: str,
                         cc: tuple[str, ...] = ()) -> list[str]:
    return make_argv(src, [f"INSTALL_MOD_PATH={dest}", f"DEPMOD={depmod}", "modules_install"],
                     cc=cc)


def config_argv(src: Path, settings: dict[str, str]) -> list[str]:
    argv = scripts_config_argv(settings)
    return [str(src / argv[0]), *argv[1:]]  # run with cwd=src: --file .config


# A make that started the pipeline (`make demo`, `make image`) passes these down; the
# kernel's make would then print "Entering/Leaving directory" lines (kernelrelease's output
# is read) and join a jobserver that is not its own.
PARENT_MAKE_VARS = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT",
                    "MAKE_TERMERR")


def build_env(source_date_epoch: int) -> dict[str, str | None]:
    """Fixed build stamps (a reproducible vmlinuz64); LOCALVERSION set, even empty, stops
    setlocalversion from appending '+' to the release."""
    stamp = datetime.datetime.fromtimestamp(source_date_epoch, datetime.UTC)
    return {"ARCH": "x86_64", "LOCALVERSION": "", "LC_ALL": "C",
            "KBUILD_BUILD_USER": "tc-appliance", "KBUILD_BUILD_HOST": "tc-appliance",
            "KBUILD_BUILD_TIMESTAMP": stamp.strftime("%a %b %d %H:%M:%S UTC %Y"),
            **dict.fromkeys(PARENT_MAKE_VARS)}


# --- running the steps --------------------------------------------------------------------


class Progress:
    """One console line per PROGRESS_EVERY_S of a long step, not one per make line."""

    def __init__(self, step: str, every: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = log.detail):
        self.step, self.every, self.clock, self.say = step, every, clock, say
        self.start = self.last = clock()
        self.lines = 0

    def __call__(self, line: str) -> None:
        self.lines += 1
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.say(f"kernel: {self.step}: {now - self.start:.0f} s, {self.lines} lines, "
                     f"at {line.strip()[:80]}")


class Steps:
    """Runs the stage's commands into build/logs/kernel.log; a failure names its step."""

    def __init__(self, runner: Runner, env: dict[str, str]):
        self.runner, self.env = runner, env

    def run(self, step: str, argv: list[str], *, cwd: Path | None = None,
            timeout: float = STEP_TIMEOUT_S, hint: str = "") -> Result:
        log.detail(f"kernel: {step}")
        try:
            return self.runner.run(argv, cwd=cwd, env=self.env, log=LOG, timeout=timeout,
                                   on_line=Progress(step))
        except ToolError as exc:
            raise StageError(f"kernel: step '{step}' failed: {exc.message}",
                             exc.hint or hint or None) from None


def unpack(steps: Steps, tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    steps.run(f"unpack {tarball.name}", tar_argv(tarball, dest))
    return top_folder(dest, tarball.name)


def defined_symbols(src: Path) -> set[str]:
    """Every symbol the tree's Kconfig files define: tells 'renamed' from 'unset'."""
    found: set[str] = set()
    for path in src.rglob("Kconfig*"):
        if path.is_file():
            found |= kconfig_symbols(path.read_text(encoding="utf-8", errors="replace"))
    return found


def pick_toolchain(steps: Steps, src: Path) -> toolchain.Toolchain:
    """The compiler for this tree, installed, and said in the progress output."""
    header = src / toolchain.SUBCMD_UTIL
    old = header.is_file() and toolchain.old_libsubcmd(
        header.read_text(encoding="utf-8", errors="replace"))
    version = steps.run("gcc -dumpversion", ["gcc", "-dumpversion"]).output
    chosen = toolchain.choose(old, toolchain.gcc_major(version))
    toolchain.require(chosen)
    log.detail(f"kernel: compiler: {chosen.reason}")
    return chosen


def configure(steps: Steps, src: Path, config: Path, settings: dict[str, str],
              cc: tuple[str, ...] = ()) -> dict:
    """The pinned config + our settings + olddefconfig; every setting must hold."""
    kernel.read_config(config.read_text(encoding="utf-8", errors="replace"), config.name)
    shutil.copyfile(config, src / ".config")
    steps.run("apply kernel/ fragments", config_argv(src, settings), cwd=src)
    steps.run("make olddefconfig", make_argv(src, ["olddefconfig"], cc=cc))
    final = parse_config((src / ".config").read_text(encoding="utf-8"), ".config")
    problems = verify_settings(settings, final, defined_symbols(src))
    if problems:
        raise StageError("kernel: the final .config lost settings of kernel/:\n  "
                         + "\n  ".join(problems),
                         "a missing dependency belongs in kernel/containers.config or the "
                         "module's options in kernel/modules.toml")
    return final


def build_modules(steps: Steps, src: Path, specs: list[ModuleSpec], jobs: int,
                  cc: tuple[str, ...] = ()) -> None:
    steps.run("make modules_prepare", make_argv(src, ["modules_prepare"], jobs, cc),
              hint=TOOLCHAIN_HINT)
    for folder in dict.fromkeys(s.dir for s in specs):
        steps.run(f"make M={folder} modules", module_make_argv(src, folder, jobs, cc),
                  hint=f"{folder} did not build against this tree; see the log")


def build_everything(steps: Steps, src: Path, modroot: Path, jobs: int,
                     cc: tuple[str, ...] = ()) -> Path:
    """bzImage and every module, installed under modroot; returns lib/modules/<kver>."""
    steps.run("make bzImage modules (the whole kernel)",
              make_argv(src, ["bzImage", "modules"], jobs, cc), timeout=FULL_BUILD_TIMEOUT_S,
              hint=TOOLCHAIN_HINT)
    depmod = shutil.which("depmod") or "/sbin/depmod"
    steps.run("make modules_install", modules_install_argv(src, modroot, depmod, cc))
    moddirs = sorted((modroot / "lib" / "modules").iterdir())
    for link in ("build", "source"):  # they point into the tree, which is deleted
        (moddirs[0] / link).unlink(missing_ok=True)
    return moddirs[0]


def run(ctx, work: Path) -> dict[str, Path]:
    """The stage: (ctx: appliance.context.Context, work: build/kernel.tmp) -> outputs."""
    recipe, kver = ctx.recipe, ctx.recipe.tinycore.kernel
    full = recipe.kernel.rebuild == "full"
    specs = load_modules()
    settings = settings_for(list(recipe.kernel.modules), recipe.kernel.rebuild, specs,
                            load_fragment())
    fetched = outputs_of(ctx.build_root, "fetch")
    if "kernel/source" not in fetched or "kernel/config" not in fetched:
        raise StageError("kernel: the fetch stage has no kernel/source and kernel/config",
                         "run `python pipeline.py lock`, then build again")
    source, config = fetched["kernel/source"], fetched["kernel/config"]
    steps = Steps(ctx.runner, build_env(recipe.effective_source_date_epoch()))
    jobs = os.cpu_count() or 1
    src = unpack(steps, source, work / "src")
    cc = pick_toolchain(steps, src).make_vars
    configure(steps, src, config, settings, cc)
    check_release(steps.run("make kernelrelease", make_argv(src, ["-s", "kernelrelease"], cc=cc))
                  .output, kver, source.name, config.name)
    wanted = [specs[m] for m in recipe.kernel.modules]
    packer = package.Packager(ctx.runner, steps, work, kver, recipe.effective_source_date_epoch(),
                              f"{source.name} with {config.name}")
    if full:
        moddir = build_everything(steps, src, work / "modroot", jobs, cc)
        outputs = packer.full_rebuild(src, moddir, wanted, fetched, ctx.lock.extension_deps)
    else:
        build_modules(steps, src, wanted, jobs, cc)
        outputs = packer.modules_only(src, wanted)
    outputs.update(packer.finish(src, full, source.name, config.name))
    for scratch in ("src", "trees", "modroot"):  # gigabytes; only the outputs stay
        shutil.rmtree(work / scratch, ignore_errors=True)
    return outputs


# tcz: a full rebuild remakes Tiny Core's module extensions from the fetched ones.
STAGE = Stage("kernel", VERSION, key_slice, run, data="kernel", tools=TOOLS, idle=idle_reason,
              uses=("fetch/kernel/", "fetch/tcz/"))
