"""The packer stage: Packer boots the remastered ISO in QEMU, installs to disk, reboots,
verifies and hands back a qcow2 (docs/architecture.md#packer, packer/).

Packer's files are rendered into the stage's work directory (build/packer.tmp/); Packer's
output directory is inside it and must not exist beforehand; the serial console and
Packer's own log go to build/logs/, because Packer deletes its output directory when a
build fails. On success the qcow2 moves next to stamp.json and the engine renames the
folder to build/packer/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from appliance import files, keys, log
from appliance.config import Recipe
from appliance.engine import Stage, outputs_of
from appliance.errors import StageError
from appliance.paths import cache_root, data_dir
from appliance.stages.packer import template as packer_template
from appliance.stages.packer.output import Progress
from appliance.tools import parse_version, tool_version
from appliance.vm import qemu

VERSION = 1  # bump when a change here changes what the stage produces
TOOLS = (("packer", "version"), ("qemu-system-x86_64", "--version"))
VERSION_ARGV = ("packer", "version")


def key_slice(recipe: Recipe) -> dict:
    return {"name": recipe.name, "version": recipe.version,
            "vm": recipe.vm.model_dump(mode="json"),
            "install": recipe.install.model_dump(mode="json"),
            "install_only": recipe.live.install_only_files,
            "boot_disk": recipe.disk_boot_codes(), "services": list(recipe.services),
            "ready_timeout": recipe.ready_timeout}


def packer_version() -> tuple[int, ...]:
    text = tool_version(VERSION_ARGV)
    version = parse_version(text)
    if version is None:
        raise StageError(f"cannot tell the Packer version from `packer version`: {text!r}",
                         "install Packer (make deps installs Debian's packer)")
    return version


def var_args(work: Path) -> list[str]:
    return [f"-var-file={work / packer_template.VAR_FILE}", str(work)]


def init_argv(work: Path) -> list[str]:
    return ["packer", "init", str(work)]


def validate_argv(work: Path) -> list[str]:
    return ["packer", "validate", *var_args(work)]


def build_argv(work: Path) -> list[str]:
    return ["packer", "build", "-machine-readable", "-color=false", *var_args(work)]


def packer_env(logs: Path) -> dict[str, str | None]:
    return {
        "PACKER_CACHE_DIR": str(cache_root() / "packer"),
        "PACKER_LOG": "1",
        "PACKER_LOG_PATH": str(logs / "packer-debug.log"),
        "CHECKPOINT_DISABLE": "1",  # no calls home from a build machine
        "PACKER_NO_COLOR": "1",
    }


def extension_order(build_root: Path) -> tuple[str, ...]:
    listing = outputs_of(build_root, "extensions").get("onboot.lst")
    if listing is None or not listing.is_file():
        raise StageError("the extensions stage left no onboot.lst",
                         "run the build again with --force extensions")
    return tuple(n.strip() for n in listing.read_text().splitlines() if n.strip())


def inputs(ctx, work: Path, logs: Path) -> packer_template.Build:
    remastered = outputs_of(ctx.build_root, "remaster")
    iso = remastered["iso"]
    sha = remastered["iso.sha256"].read_text().split()[0]
    accel = qemu.accelerator()
    log.say(f"packer: accelerator {accel.name} ({accel.reason})")
    if accel.name == "tcg" and ctx.recipe.vm.cpus > 1:
        log.warn(f"vm.cpus = {ctx.recipe.vm.cpus} under TCG: a 2-vCPU guest once hung inside "
                 "runc in a trial; 1 is the safe value without KVM")
    private, _public = keys.build_key(cache_root() / "keys", ctx.runner)
    return packer_template.Build(
        iso=iso, iso_sha256=sha, accelerator=accel.name, private_key=private,
        extensions=extension_order(ctx.build_root), work=work,
        serial_log=logs / "packer-serial.log")


def failure(progress: Progress, build: packer_template.Build, logs: Path) -> StageError:
    if progress.verdict == "FAIL":
        what = f"verify.sh failed in the VM: {progress.reason}"
    elif progress.first_error():
        what = f"packer build failed: {progress.first_error()}"
    else:
        what = "packer build failed"
    return StageError(
        f"{what}\n  serial console: {build.serial_log}\n  packer output: {logs / 'packer.log'}"
        f"\n  packer debug log: {logs / 'packer-debug.log'}",
        "the serial console shows what the guest did; rerun with `build --force packer`")


def run_packer(ctx, build: packer_template.Build, logs: Path,
               version: tuple[int, ...]) -> Progress:
    env = packer_env(logs)
    if packer_template.needs_plugins_file(version):
        ctx.runner.run(init_argv(build.work), cwd=build.work, env=env, log="packer")
    ctx.runner.run(validate_argv(build.work), cwd=build.work, env=env, log="packer")
    progress = Progress(show=log.detail)
    result = ctx.runner.run(build_argv(build.work), cwd=build.work, env=env, log="packer",
                            on_line=progress.feed, check=False)
    if result.returncode != 0 or progress.verdict != "PASS":
        raise failure(progress, build, logs)
    return progress


def collect(ctx, build: packer_template.Build, progress: Progress) -> dict[str, Path]:
    name = packer_template.vm_name(ctx.recipe)
    produced = build.work / "output" / name
    if not produced.is_file():
        raise StageError(f"packer reported success but {produced} is missing",
                         "see build/logs/packer.log")
    disk = build.work / name
    produced.rename(disk)
    shutil.rmtree(build.work / "output")
    report = {"accelerator": build.accelerator, "install_mode": ctx.recipe.install.mode,
              "packer_version": tool_version(VERSION_ARGV), "phases": progress.phases(),
              # root=UUID=... (traditional) or tce=UUID=... (frugal): the disk by identity
              "root_fs": progress.root_fs}
    files.write_text(build.work / "build.json", json.dumps(report, indent=2) + "\n")
    times = ", ".join(f"{k} {v} s" for k, v in report["phases"].items())
    log.say(f"packer: verified {ctx.recipe.install.mode} install ({times}); "
            f"{disk.name}: {disk.stat().st_size // (1024 * 1024)} MiB")
    return {"qcow2": disk, "build.json": build.work / "build.json"}


def run(ctx, work: Path) -> dict[str, Path]:
    """The stage: (ctx: appliance.context.Context, work: build/packer.tmp) -> outputs."""
    logs = ctx.build_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "packer-debug.log").unlink(missing_ok=True)
    build = inputs(ctx, work, logs)
    values = packer_template.values(ctx.recipe, build)
    version = packer_version()
    packer_template.render(data_dir("packer"), work, values, version)
    progress = run_packer(ctx, build, logs, version)
    return collect(ctx, build, progress)


STAGE = Stage("packer", VERSION, key_slice, run, data="packer", tools=TOOLS)
