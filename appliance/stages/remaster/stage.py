"""The remaster stage: the Tiny Core ISO -> build/remaster/appliance-<version>.iso (+ .sha256).

What changes on the base ISO (read iso-remaster/ for the files it lays in):
    boot/isolinux/isolinux.cfg   rewritten (isolinux.py): the default label boots unattended
    boot/appliance.gz            what the installed system keeps (initrd.py)
    boot/build.gz                the build key's public half (keys.py, initrd.py)
    cde/optional/, cde/onboot.lst  every extension; what the live system loads (cde.py)
    mydata.tgz                   the recipe's restore files, when it lists any (restore.py)
Everything else, and everything that makes it boot, stays as it was (iso_image.py).

Every input is read, checked and built in memory before the first byte of the ISO is
written, and the ISO is written under a temporary name: bad input ends in one clear error
and no output. The same inputs and SOURCE_DATE_EPOCH give a byte-identical ISO.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
from pycdlib import pycdlibexception

from appliance import config, files, keys, log
from appliance.config import Recipe
from appliance.engine import Stage, outputs_of
from appliance.errors import RemasterError
from appliance.fetch import sha256_file
from appliance.paths import cache_root, data_dir
from appliance.stages.remaster import cde, restore
from appliance.tinycore import initrd
from appliance.tinycore.iso_image import BaseIso, fixed_clock
from appliance.tinycore.isolinux import Appliance, IsolinuxError, render

VERSION = 1  # bump when a change here changes the ISO for the same inputs
TEMPLATES = data_dir("iso-remaster")
CFG = "/boot/isolinux/isolinux.cfg"
KERNEL = "/boot/vmlinuz64"
INITRDS = ("/boot/corepure64.gz", "/boot/appliance.gz", "/boot/build.gz")
MYDATA = "/mydata.tgz"
DISKROOT = "/boot/diskroot.gz"  # the traditional install's /init; the live ISO never loads it
OURS = ("/boot/appliance.gz", "/boot/build.gz", DISKROOT, MYDATA)


@dataclass(frozen=True)
class Inputs:
    """Everything the ISO is made of (the stage fills it from the recipe and earlier stages)."""

    base_iso: Path
    extensions: tuple[cde.Extension, ...]
    onboot: tuple[str, ...]
    settings: initrd.LiveSettings
    boot_codes: tuple[str, ...]
    title: str
    public_key: str
    mydata: bytes | None
    epoch: int
    templates: Path = TEMPLATES


def environment(templates: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


def new_config(base: BaseIso, inputs: Inputs) -> bytes:
    # latin-1 round-trips any byte: a config in another encoding is kept as it was
    text = base.read(CFG).decode("latin-1")
    app = Appliance(KERNEL, INITRDS, inputs.boot_codes, inputs.title)
    try:
        return render(environment(inputs.templates), text, app).encode("latin-1")
    except IsolinuxError as exc:
        raise RemasterError(f"{inputs.base_iso}: boot/isolinux/isolinux.cfg: {exc}") from None
    except jinja2.TemplateError as exc:
        raise RemasterError(f"iso-remaster/isolinux.cfg.j2: {exc}") from None


def prepare(base: BaseIso, inputs: Inputs) -> dict[str, bytes]:
    """The new and changed small files, all built before anything is written."""
    for path in OURS:
        if base.exists(path):
            raise RemasterError(f"{inputs.base_iso}: already has {path.lstrip('/')}; remaster "
                                "the original Tiny Core ISO, not a remastered one")
    dirs = initrd.base_directories(base.read(INITRDS[0]))
    files = {
        CFG: new_config(base, inputs),
        "/boot/appliance.gz": initrd.archive(
            initrd.appliance_files(inputs.settings, inputs.templates), dirs, inputs.epoch),
        "/boot/build.gz": initrd.archive(initrd.build_files(inputs.public_key), dirs,
                                         inputs.epoch),
        DISKROOT: initrd.archive(initrd.diskroot_files(inputs.templates), dirs, inputs.epoch),
    }
    if inputs.mydata is not None:
        files[MYDATA] = inputs.mydata
    return files


def remaster(inputs: Inputs, out: Path) -> Path:
    """Write the remastered ISO to `out` (and nothing at all on an error)."""
    with BaseIso(inputs.base_iso) as base:
        files = prepare(base, inputs)
        cde_files = list(cde.tree(list(inputs.extensions), list(inputs.onboot)))
        try:
            with fixed_clock(inputs.epoch):
                apply(base, files, cde_files, inputs.base_iso.name)
                base.write(out)
        except pycdlibexception.PyCdlibException as exc:
            raise RemasterError(f"remaster: pycdlib refused a change to {inputs.base_iso.name}: "
                                f"{exc}") from None
        except OSError as exc:
            raise RemasterError(f"remaster: cannot write {out}: {exc.strerror or exc}") from None
    return out


def apply(base: BaseIso, files: dict[str, bytes], cde_files: list, name: str) -> None:
    base.replace_file(CFG, files.pop(CFG))
    for path, data in files.items():
        base.add_file(path, data)
    if base.exists(cde.CDE):
        log.warn(f"{name}: its /cde is replaced by the appliance's")
        base.remove_tree(cde.CDE)
    base.add_dir(cde.CDE)
    base.add_dir(f"{cde.CDE}/optional")
    for path, data in cde_files:
        base.add_file(path, data)


def write_sha256(iso: Path) -> Path:
    """`<hex>  <name>` beside the ISO (sha256sum -c format)."""
    out = iso.with_name(iso.name + ".sha256")
    files.write_text(out, f"{sha256_file(iso)}  {iso.name}\n")
    return out


# --- the stage ------------------------------------------------------------------------------


def restore_digest(recipe: Recipe) -> list:
    """The restore entries and their contents, for the stage key."""
    result = []
    for item in recipe.restore:
        found = []
        try:
            for name, host in restore.members(item):
                found.append([name, sha256_file(host) if host.is_file() else "dir"])
        except (RemasterError, OSError) as exc:  # reported properly when the stage runs
            found.append(["error", str(exc)])
        result.append({**item.model_dump(mode="json", exclude={"source"}), "files": found})
    return result


def key_slice(recipe: Recipe) -> dict:
    """The recipe fields the stage reads (the password hash only as a digest: the stamp is
    a plain file)."""
    pw = recipe.tc_password_hash
    return {
        "name": recipe.name, "version": recipe.version, "boot": recipe.live_boot_codes(),
        "guest_mirror": recipe.tinycore.guest_mirror, "kernel": recipe.tinycore.kernel,
        "hostname": recipe.hostname, "services": list(recipe.services),
        "ready_timeout": recipe.ready_timeout, "onboot": list(recipe.live.onboot),
        "tc_password_hash": hashlib.sha256(pw.encode()).hexdigest() if pw else None,
        "restore": restore_digest(recipe),
        "firstboot_sources": list(recipe.firstboot.sources),
        "source_date_epoch": recipe.effective_source_date_epoch(),
    }


def extra_key(ctx) -> dict:
    """The build key (made here on first use: it is an input of the ISO) and the lock's
    dependency graph of Tiny Core's extensions (it becomes their .dep files). `plan` makes
    no key: without one the stage simply would run."""
    if getattr(ctx, "dry_run", False):
        public = keys.existing_public(cache_root() / "keys")
        digest = keys.public_digest(public) if public else "(not made yet)"
    else:
        digest = keys.public_digest(keys.build_key(cache_root() / "keys", ctx.runner)[1])
    return {"build_key": digest, "deps": ctx.lock.extension_deps}


def extension_set(ctx) -> list[cde.Extension]:
    """The extensions stage's full list when it builds; else Tiny Core's (+ the kernel's)."""
    if "extensions" in ctx.active_stages:
        built = outputs_of(ctx.build_root, "extensions")
        if "extensions.json" not in built:
            raise RemasterError("remaster: the extensions stage recorded no extensions.json",
                                "rebuild it: python pipeline.py build --force extensions")
        return cde.from_listing(built["extensions.json"], built)
    fetched = outputs_of(ctx.build_root, "fetch")
    found = cde.from_fetch(fetched, list(ctx.lock.extension_order), ctx.lock.extension_deps)
    if "kernel" in ctx.active_stages:
        found = cde.combine(found, cde.from_modules_json(outputs_of(ctx.build_root, "kernel")))
    return found


def inputs_from(ctx) -> Inputs:
    recipe = ctx.recipe
    fetched = outputs_of(ctx.build_root, "fetch")
    extensions = extension_set(ctx)
    epoch = recipe.effective_source_date_epoch()
    _private, public = keys.build_key(cache_root() / "keys", ctx.runner)
    return Inputs(
        base_iso=fetched["iso"],
        extensions=tuple(extensions),
        onboot=tuple(cde.onboot_order(extensions, list(recipe.live.onboot),
                                      recipe.tinycore.kernel)),
        settings=initrd.LiveSettings(recipe.tinycore.guest_mirror, recipe.hostname,
                                     tuple(recipe.services), recipe.ready_timeout,
                                     recipe.tc_password_hash,
                                     tuple(recipe.firstboot.sources)),
        boot_codes=tuple(config.live_codes_with_restore(recipe.live_boot_codes(),
                                                        bool(recipe.restore))),
        title=f"{recipe.name} {recipe.version} (install, serial console)",
        public_key=public,
        mydata=restore.mydata_tgz(list(recipe.restore), epoch),
        epoch=epoch,
    )


def run(ctx, work: Path) -> dict[str, Path]:
    """The stage: (ctx: appliance.context.Context, work: build/remaster.tmp) -> outputs."""
    inputs = inputs_from(ctx)
    iso = remaster(inputs, work / f"appliance-{ctx.recipe.version}.iso")
    log.detail(f"remaster: {iso.name}: {iso.stat().st_size // (1024 * 1024)} MiB, "
               f"{len(inputs.extensions)} extensions on /cde, onboot: {' '.join(inputs.onboot)}")
    return {"iso": iso, "iso.sha256": write_sha256(iso)}


STAGE = Stage("remaster", VERSION, key_slice, run, data="iso-remaster", extra=extra_key)
