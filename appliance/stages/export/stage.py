"""The export stage: the packer stage's qcow2 -> the deliverables in out/.

    out/<name>-<version>.qcow2   compressed, `qemu-img check` clean
    out/<name>-<version>.ova     USTAR: .ovf, .mf, streamOptimized VMDK (export.formats)
    out/manifest.json            recipe digest, inputs, outputs, tool versions, timings
    out/SHA256SUMS               `sha256sum -c` for all of the above

Everything is made and checked in build/export.tmp first; out/ only ever receives finished
files (appliance/stages/export/publish.py), so a failed or interrupted export leaves the last good ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance import files, log
from appliance.config import Recipe
from appliance.engine import Stage, outputs_of
from appliance.errors import StageError
from appliance.fetch import sha256_file
from appliance.paths import out_root
from appliance.run import Runner
from appliance.stages.export import ova, ovf, publish, release_manifest
from appliance.vm import qemu_img

# bump when a change here changes the deliverables for the same inputs (2: the OVF's
# ProductSection and CD drive for first boot)
VERSION = 2
TOOLS = (("qemu-img", "--version"),)
REBUILD_PACKER = "rebuild the disk: python pipeline.py build --force packer"
RERUN = "check free space under build/ and rerun: python pipeline.py build --force export"


def key_slice(recipe: Recipe) -> dict:
    """What the stage reads; the whole recipe's digest too, because manifest.json records
    it. out/ is part of the key so that moving APPLIANCE_OUT publishes there again."""
    return {
        "name": recipe.name, "version": recipe.version,
        "export": recipe.export.model_dump(mode="json"),
        "vm": {"cpus": recipe.vm.cpus, "memory_mb": recipe.vm.memory_mb},
        "source_date_epoch": recipe.effective_source_date_epoch(),
        "recipe_sha256": release_manifest.recipe_digest(recipe),
        "out": str(out_root()),
    }


def extra_key(lock) -> dict:
    """manifest.json lists each pin's version and URL, not only its bytes."""
    return {k: [p.version, p.url, p.sha256] for k, p in sorted(lock.pins.items())}


def basename(recipe: Recipe) -> str:
    return f"{recipe.name}-{recipe.version}"


# --- inputs ----------------------------------------------------------------------------------


def packer_outputs(build_root: Path) -> tuple[Path, dict]:
    """The packer stage's disk and build.json, or an error saying how to get them."""
    built = outputs_of(build_root, "packer")
    disk, meta = built.get("qcow2"), built.get("build.json")
    if disk is None or not disk.is_file():
        raise StageError(f"export: the packer stage's disk {disk or 'qcow2'} is missing",
                         REBUILD_PACKER)
    try:
        packer = json.loads(meta.read_text()) if meta else None
    except (OSError, ValueError) as exc:
        raise StageError(f"export: cannot read the packer stage's {meta}: {exc}",
                         REBUILD_PACKER) from None
    if not isinstance(packer, dict):
        raise StageError(f"export: the packer stage recorded no usable build.json ({meta})",
                         REBUILD_PACKER)
    return disk, packer


def inspect_source(runner: Runner, disk: Path) -> int | None:
    """Refuse a damaged source before converting it (a conversion may not notice); return
    the bytes of data it holds, for the OVF's populatedSize."""
    report = qemu_img.check(runner, disk)
    if report.returncode == qemu_img.CHECK_LEAKS:
        log.warn(f"{disk}: {report.problem()} (harmless: space only; not copied on export)")
    elif not report.clean:
        raise StageError(f"export: {disk} is not a sound qcow2 image: {report.problem()}",
                         REBUILD_PACKER)
    info = qemu_img.info(runner, disk, "qcow2")
    if report.allocated_clusters is None or not info.cluster_size:
        return None
    return report.allocated_clusters * info.cluster_size


# --- deliverables ----------------------------------------------------------------------------


def make_qcow2(runner: Runner, src: Path, dst: Path) -> Path:
    runner.run(qemu_img.convert_qcow2_argv(src, dst), log=qemu_img.LOG)
    report = qemu_img.check(runner, dst)
    if not report.clean:
        raise StageError(f"export: {dst} fails qemu-img check: {report.problem()}", RERUN)
    return dst


def make_vmdk(runner: Runner, src: Path, dst: Path, controller: str) -> qemu_img.DiskInfo:
    runner.run(qemu_img.convert_vmdk_argv(src, dst, controller), log=qemu_img.LOG)
    qemu_img.fix_cid(dst)  # the same qcow2 gives the same VMDK, so the same OVA
    info = qemu_img.info(runner, dst, "vmdk")
    if info.create_type != "streamOptimized":
        raise StageError(f"export: {dst} has create type {info.create_type!r}, not "
                         "streamOptimized; OVF importers would refuse it",
                         "use a qemu-img that writes streamOptimized VMDKs (qemu-utils)")
    return info


def make_ova(runner: Runner, recipe: Recipe, src: Path, populated: int | None,
             work: Path) -> dict[str, Path]:
    base = basename(recipe)
    folder = work / "ova"
    folder.mkdir()
    vmdk = folder / f"{base}-disk1.vmdk"
    vmdk_info = make_vmdk(runner, src, vmdk, recipe.export.disk_controller)
    descriptor = ovf.Descriptor(
        name=recipe.name,
        annotation=f"{recipe.name} {recipe.version}: a container appliance on Tiny Core "
                   f"Linux {recipe.tinycore.version}",
        disk=ovf.Disk(vmdk.name, vmdk.stat().st_size, vmdk_info.virtual_size, populated),
        cpus=recipe.vm.cpus, memory_mb=recipe.vm.memory_mb,
        controller=recipe.export.disk_controller, version=recipe.version)
    ovf_file = folder / f"{base}.ovf"
    ovf_file.write_text(ovf.render(descriptor), encoding="utf-8")
    mf_file = folder / f"{base}.mf"
    mf_file.write_text(ovf.manifest([(ovf_file.name, ovf_file), (vmdk.name, vmdk)],
                                    recipe.export.manifest_digest))
    members = [(p.name, p) for p in (ovf_file, mf_file, vmdk)]
    ova_file = ova.write(work / f"{base}.ova", members, recipe.effective_source_date_epoch())
    vmdk.unlink()  # its bytes are in the OVA: keep one copy under build/
    return {"ova": ova_file, "ovf": ovf_file, "mf": mf_file}


def earlier_stages(ctx) -> list[str]:
    """The stages this build ran (an idle stage's old folder is not part of it)."""
    return [s for s in ctx.active_stages if s != "export"]


def run(ctx, work: Path) -> dict[str, Path]:
    """The stage: (ctx: appliance.context.Context, work: build/export.tmp) -> outputs."""
    recipe = ctx.recipe
    disk, packer = packer_outputs(ctx.build_root)
    populated = inspect_source(ctx.runner, disk)
    made: dict[str, Path] = {}
    if "qcow2" in recipe.export.formats:
        made["qcow2"] = make_qcow2(ctx.runner, disk, work / f"{basename(recipe)}.qcow2")
    if "ova" in recipe.export.formats:
        made.update(make_ova(ctx.runner, recipe, disk, populated, work))
    deliverables = {k: made[k] for k in ("qcow2", "ova") if k in made}
    digests = {p: sha256_file(p) for p in deliverables.values()}
    manifest = release_manifest.write(work / "manifest.json", release_manifest.build(
        recipe=recipe, lock=ctx.lock, digests=digests, packer=packer,
        timings=release_manifest.stage_timings(ctx.build_root, earlier_stages(ctx))))
    digests[manifest] = sha256_file(manifest)
    sums = work / "SHA256SUMS"
    files.write_text(sums, publish.sha256sums(digests))
    # SHA256SUMS last: it vouches for the rest
    final = {**deliverables, "manifest.json": manifest, "SHA256SUMS": sums}
    published = dict(zip(final, publish.publish(list(final.values()), out_root()), strict=True))
    for path in published.values():
        log.detail(f"export: {path} ({path.stat().st_size // 1024} KiB)")
    return {**made, **final, **{f"out/{k}": p for k, p in published.items()}}


STAGE = Stage("export", VERSION, key_slice, run, tools=TOOLS, extra=lambda ctx: extra_key(ctx.lock))
