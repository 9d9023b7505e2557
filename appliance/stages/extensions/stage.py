"""The extensions stage: overlays/* -> NAME.tcz (+ .md5.txt, .dep, .info, .list), and the
appliance's full extension load order.

Inputs: the fetch stage's Tiny Core extensions and release files, the kernel stage's module
extensions (modules.json), the recipe's container images (pulled by digest, images.py).
For each overlay (overlay_spec.py) the stage lays out the tree (overlay_tree.py), writes its
`.dep` (its own deps, plus the kernel stage's extension for each module it uses, as
`NAME-KERNEL.tcz`), checks that every dependency is fetched or built, and packs it with
tcz.py. An extension whose inputs did not change since the last build is reused, so editing
one overlay rebuilds only that .tcz. extensions.json lists every extension of the appliance
(Tiny Core's, the kernel stage's, ours) in load order, dependencies first, with path, md5 and
deps; onboot.lst is the same order as Tiny Core reads it. The remaster and packer stages
consume both.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from appliance import files, log
from appliance.config import Image, Recipe
from appliance.engine import STAMP, Stage, digest_json, outputs_of, tree_digests
from appliance.errors import StageError
from appliance.fetch import md5_file, sha256_file
from appliance.lock import Lock, image_key
from appliance.paths import data_dir
from appliance.stages.extensions import images, overlay_spec, overlay_tree
from appliance.stages.kernel import stage as kernel_build
from appliance.tinycore import repository as tinycore
from appliance.tinycore import tcz
from appliance.tools import tool_version

VERSION = 1  # bump when a change here changes what the stage produces
TOOLS = (("mksquashfs", "-version"), ("skopeo", "--version"))
SUFFIXES = ("", ".md5.txt", ".dep", ".info", ".list")
LISTING = "extensions.json"


def overlays_root() -> Path:
    return data_dir("overlays")


def key_slice(recipe: Recipe) -> dict:
    """The recipe fields the stage reads."""
    return {
        "kernel": recipe.tinycore.kernel,
        "overlays": recipe.overlays,
        "images": [i.model_dump(mode="json") for i in recipe.images],
        "releases": {n: r.version for n, r in sorted(recipe.releases.items())},
        "services": recipe.services,
        "source_date_epoch": recipe.effective_source_date_epoch(),
    }


def extra_key(lock: Lock) -> dict:
    """Pins the stage uses beyond its input files: image digests and Tiny Core's .dep graph."""
    return {"images": {k: p.sha256 for k, p in sorted(lock.pins.items())
                       if k.startswith("image/")},
            "tinycore_deps": lock.extension_deps}


@dataclass
class Available:
    """Every extension the appliance can load, by file name."""

    kernel_release: str
    paths: dict[str, Path] = field(default_factory=dict)
    deps: dict[str, list[str]] = field(default_factory=dict)  # concrete names
    source: dict[str, str] = field(default_factory=dict)  # tinycore | kernel | overlay
    md5: dict[str, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)  # module -> kernel-stage extension
    kernel_names: dict[str, str] = field(default_factory=dict)  # its -KERNEL spelling
    roots: list[str] = field(default_factory=list)  # load-order roots, in order

    def add(self, name: str, path: Path, deps: list[str], source: str, md5: str) -> None:
        if name not in self.paths:
            self.roots.append(name)
        self.paths[name], self.deps[name], self.source[name], self.md5[name] = (
            path, deps, source, md5)

    def concrete(self, dep: str) -> str:
        return tinycore.parse_dep(dep, self.kernel_release, source="an extension.toml")[0]


def fetched_and_kernel(ctx) -> tuple[Available, dict[str, Path]]:
    """Tiny Core's extensions (fetch stage) and the kernel stage's, plus release files."""
    avail = Available(ctx.recipe.tinycore.kernel)
    fetched = outputs_of(ctx.build_root, "fetch")
    for name in ctx.lock.extension_order:
        path = fetched[f"tcz/{name}"]
        pin = ctx.lock.pins[f"tcz/{name}"]
        avail.add(name, path, list(ctx.lock.extension_deps.get(name, [])), "tinycore",
                  pin.md5 or md5_file(path))
    releases = {k.removeprefix("release/"): p for k, p in fetched.items()
                if k.startswith("release/")}
    if kernel_build.idle_reason(ctx.recipe) is None:
        built = outputs_of(ctx.build_root, "kernel")
        listing = json.loads(built["modules.json"].read_text())
        for entry in listing.get("extensions", []):
            name = entry["name"]
            avail.add(name, built[name], [avail.concrete(d) for d in entry.get("deps", [])],
                      "kernel", md5_file(built[name]))
            avail.kernel_names[name] = entry.get("kernel_name", name)
            for module in entry.get("modules", []):
                avail.modules.setdefault(module, name)
    return avail, releases


def dep_lines(spec: overlay_spec.ExtensionSpec, avail: Available) -> tuple[list[str], list[str]]:
    """(NAME.tcz.dep lines, problems): the spec's deps as written, then the kernel stage's
    extension for each module it uses, as NAME-KERNEL.tcz (Tiny Core's own spelling)."""
    lines = [tcz.tcz_name(d) for d in spec.deps]
    problems = []
    for module in spec.module_deps:
        carrier = avail.modules.get(module)
        if carrier:
            lines.append(avail.kernel_names.get(carrier, carrier))
        elif module in spec.required_modules:
            problems.append(f"{spec.filename} needs kernel module '{module}', and no extension "
                            "of the kernel stage carries it (add it to kernel.modules in the "
                            "recipe)")
        else:
            log.warn(f"extensions: {spec.filename}: no extension carries kernel module "
                     f"'{module}'; its service falls back (see its init script)")
    return list(dict.fromkeys(lines)), problems


def check_deps(specs, deps: dict[str, list[str]], avail: Available) -> None:
    """Every dependency of ours is fetched, built by the kernel stage, or one of ours."""
    ours = {s.filename for s in specs}
    problems = []
    for spec in specs:
        for line in deps[spec.filename]:
            name = avail.concrete(line)
            if name not in avail.paths and name not in ours:
                problems.append(f"{spec.filename} depends on {line}, which is neither fetched "
                                "(tinycore.extensions), built by the kernel stage, nor an overlay")
    if problems:
        raise StageError("extensions: missing dependencies:\n" + "\n".join(
            f"  {p}" for p in problems), "add the missing extension to tinycore.extensions "
                                        "in the recipe (then `pipeline.py lock`), or fix the .dep")


def version_of(spec: overlay_spec.ExtensionSpec, recipe: Recipe) -> str:
    if spec.version is not None:
        return spec.version
    release = recipe.releases.get(spec.version_from or "")
    if release is None:
        raise StageError(f"extensions: overlays/{spec.name}: version_from = "
                         f"'{spec.version_from}' is not a release in the recipe")
    return release.version


def pulled_images(ctx, specs) -> list[tuple[Image, Path]]:
    """Every recipe image as a verified OCI layout, if any overlay ships images."""
    if not any(s.images for s in specs):
        return []
    if not ctx.recipe.images:
        raise StageError("extensions: an overlay ships container images, and the recipe "
                         "lists none", "add [[images]] to the recipe (README: Recipe)")
    layouts = []
    for image in ctx.recipe.images:
        pin = ctx.lock.pins.get(image_key(image))
        if pin is None:
            raise StageError(f"extensions: image {image.name} is not pinned in the lock",
                             "run `python pipeline.py lock`")
        layouts.append((image, images.pull(image, pin.sha256, ctx.runner,
                                           offline=ctx.fetcher.offline)))
    return layouts


def check_compose(spec, recipe: Recipe, releases: dict[str, Path]) -> None:
    """Every image the pinned docker-compose.yaml names is shipped (else faasd pulls it)."""
    if spec.images is None or spec.images.compose_release is None:
        return
    path = releases.get(spec.images.compose_release)
    if path is None:
        raise StageError(f"extensions: overlays/{spec.name}: compose_release "
                         f"'{spec.images.compose_release}' is not a release in the recipe")
    named = images.compose_images(path.read_text(encoding="utf-8", errors="replace"))
    shipped = {i.name for i in recipe.images}
    missing = [n for n in named if n not in shipped]
    if missing:
        raise StageError(f"extensions: {path.name} names images the recipe does not ship: "
                         f"{', '.join(missing)}", "add them to [[images]] in the recipe, so "
                         "the appliance can start offline")
    extra = sorted(shipped - set(named))
    if extra:
        log.warn(f"extensions: images shipped but not named in {path.name}: {', '.join(extra)}")


def runtime_paths(specs) -> dict[str, str]:
    return {p: f"{s.name}'s service" for s in specs for p in s.runtime.writes}


def ext_key(spec, folder: Path, deps: list[str], version: str, releases: dict[str, Path],
            layouts, recipe: Recipe, runtime: dict[str, str]) -> str:
    """Everything one extension's bytes depend on: editing another overlay leaves it alone."""
    used = sorted({i.release for i in spec.install}
                  | ({spec.images.compose_release} if spec.images and
                     spec.images.compose_release else set()))
    return digest_json({
        "stage": VERSION, "spec": spec.model_dump(mode="json"),
        "folder": tree_digests(folder.parent).get(f"{folder.parent.name}/{folder.name}"),
        "deps": deps, "version": version, "runtime": runtime,
        "releases": {r: sha256_file(releases[r]) for r in used if r in releases},
        "images": [(i.name, p.parent.name) for i, p in layouts] if spec.images else [],
        "epoch": recipe.effective_source_date_epoch(),
        "mksquashfs": tool_version(("mksquashfs", "-version")),
        "squashfs": tcz.APPLIANCE.argv(),
    })


def previous_build(build_root: Path) -> tuple[Path, dict]:
    """The last finished build's folder and its per-extension entries (keys, md5s)."""
    folder = build_root / "extensions"
    try:
        if (folder / STAMP).exists():
            return folder, json.loads((folder / LISTING).read_text()).get("extensions", {})
    except (OSError, ValueError):
        pass
    return folder, {}


def reuse(name: str, key: str, previous: tuple[Path, dict], work: Path) -> bool:
    """Link the previous build of `name` into work when its key is unchanged."""
    folder, listing = previous
    before = listing.get(name, {})
    if before.get("key") != key or not (folder / name).is_file():
        return False
    if md5_file(folder / name) != before.get("md5"):  # a damaged file is rebuilt, not reused
        return False
    for suffix in SUFFIXES:
        src = folder / f"{name}{suffix}"
        if src.exists():
            try:
                os.link(src, work / src.name)
            except OSError:
                shutil.copy2(src, work / src.name)
    log.detail(f"extensions: {name} unchanged, reused")
    return True


def build_one(ctx, spec, folder: Path, work: Path, plan: dict) -> None:
    """Stage the tree and pack NAME.tcz with its metadata (or reuse an identical build)."""
    if reuse(spec.filename, plan["key"], plan["previous"], work):
        return
    tree = work / "trees" / spec.name
    epoch = ctx.recipe.effective_source_date_epoch()
    overlay_tree.stage_tree(spec, folder, tree, plan["releases"], plan["layouts"],
                            plan["runtime"], epoch)
    owners = {rel: owner for rel in spec.files if (owner := spec.owner_of(rel))}
    info = {**spec.info, "Version": plan["version"]}
    tcz.build_tcz(tree, work, spec.filename, plan["deps"], info, ctx.runner, epoch,
                  log="extensions", owners=owners, squashfs=tcz.APPLIANCE)
    shutil.rmtree(tree)
    log.detail(f"extensions: built {spec.filename} "
               f"({(work / spec.filename).stat().st_size // 1024} KiB)")


def check_services(recipe: Recipe, specs, work: Path) -> None:
    """Each service the recipe starts has its init script in one of our extensions."""
    scripts = set()
    for spec in specs:
        scripts |= set((work / f"{spec.filename}.list").read_text().splitlines())
    missing = [s for s in recipe.services if f"usr/local/etc/init.d/{s}" not in scripts]
    if missing:
        raise StageError(f"extensions: services {missing} have no /usr/local/etc/init.d/<name> "
                         "in any built extension", "add the overlay that carries it to the "
                         "recipe's overlays, or remove it from services")


def write_listing(work: Path, avail: Available, keys: dict[str, str]) -> dict[str, Path]:
    """extensions.json and onboot.lst: every extension, dependencies first (Tiny Core's in
    the lock's order, then the kernel stage's, then ours), each once."""
    graph = {n: [d for d in deps if d in avail.paths] for n, deps in avail.deps.items()}
    order = tinycore.order(graph, avail.roots)
    listing = {
        "kernel": avail.kernel_release,
        "order": order,
        "extensions": {n: {"source": avail.source[n], "md5": avail.md5[n],
                           "deps": avail.deps[n],
                           "path": (avail.paths[n].name if avail.source[n] == "overlay"
                                    else str(avail.paths[n])),
                           **({"key": keys[n]} if n in keys else {})} for n in order},
        "note": "paths of source 'overlay' are relative to this file's folder",
    }
    files.write_text(work / LISTING, json.dumps(listing, indent=2) + "\n")
    files.write_text(work / "onboot.lst", "".join(f"{n}\n" for n in order))
    return {LISTING: work / LISTING, "onboot.lst": work / "onboot.lst"}


def run(ctx, work: Path) -> dict[str, Path]:
    """The stage: (ctx: appliance.context.Context, work: build/extensions.tmp) -> outputs."""
    folders = overlay_spec.select(overlays_root(), ctx.recipe.overlays)
    specs = [overlay_spec.load(f) for f in folders]
    avail, releases = fetched_and_kernel(ctx)
    deps, problems = {}, []
    for spec in specs:
        deps[spec.filename], found = dep_lines(spec, avail)
        problems += found
    if problems:
        raise StageError("extensions: " + "\n  ".join(problems))
    check_deps(specs, deps, avail)
    for spec in specs:
        check_compose(spec, ctx.recipe, releases)
    layouts = pulled_images(ctx, specs)
    runtime = runtime_paths(specs)
    previous = previous_build(ctx.build_root)
    outputs: dict[str, Path] = {}
    keys: dict[str, str] = {}
    for spec, folder in zip(specs, folders, strict=True):
        version = version_of(spec, ctx.recipe)
        keys[spec.filename] = ext_key(spec, folder, deps[spec.filename], version, releases,
                                      layouts, ctx.recipe, runtime)
        build_one(ctx, spec, folder, work, {
            "key": keys[spec.filename], "previous": previous, "releases": releases,
            "layouts": layouts, "runtime": runtime, "version": version,
            "deps": deps[spec.filename]})
        path = work / spec.filename
        avail.add(spec.filename, path, [avail.concrete(d) for d in deps[spec.filename]],
                  "overlay", md5_file(path))
        outputs.update({f"{spec.filename}{s}": work / f"{spec.filename}{s}" for s in SUFFIXES
                        if (work / f"{spec.filename}{s}").exists()})
    shutil.rmtree(work / "trees", ignore_errors=True)
    check_services(ctx.recipe, specs, work)
    return {**outputs, **write_listing(work, avail, keys)}


STAGE = Stage("extensions", VERSION, key_slice, run, data="overlays", tools=TOOLS,
              extra=lambda ctx: extra_key(ctx.lock))
