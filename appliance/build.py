"""The appliance's stage list and the context every stage receives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from appliance import export, extensions, files, iso_remaster, kernel_build, log, packer_build
from appliance import lock as lockfile
from appliance.config import LoadedRecipe, Recipe
from appliance.errors import LockError
from appliance.fetch import Fetcher
from appliance.run import Runner
from appliance.stages import Stage, StageRunner
from appliance.tools import tool_version


@dataclass
class Context:
    loaded: LoadedRecipe
    lock: lockfile.Lock
    fetcher: Fetcher
    runner: Runner
    build_root: Path
    dry_run: bool = False  # `plan`: read only, never make anything (not even the build key)

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    def extra_key(self, stage: str) -> object:
        """Stage-specific key material: the fetch stage is keyed by the exact pins."""
        if stage == "fetch":
            return {k: p.sha256 for k, p in sorted(self.lock.pins.items())}
        if stage == "remaster":
            return iso_remaster.extra_key(self)
        if stage == "extensions":
            return extensions.extra_key(self.lock)
        if stage == "export":
            return export.extra_key(self.lock)
        return None


def select_lock(loaded: LoadedRecipe, path: Path, *, locked: bool, offline: bool,
                fetcher: Fetcher) -> lockfile.Lock:
    """--locked: the lock must be current. Otherwise a current lock is used, a missing or
    stale one is reported and the pins are resolved afresh (not written)."""
    current = lockfile.read(path)
    if locked:
        return lockfile.ensure_current(current, loaded.recipe, path)
    if current is not None and not lockfile.staleness(current, loaded.recipe):
        return current
    state = "is out of date with the recipe" if current else "does not exist"
    if offline:
        raise LockError(f"{path} {state}, and --offline cannot resolve pins",
                        "run `python pipeline.py lock` while online")
    log.warn(f"{path} {state}; resolving pins from upstream checksum files (not written; "
             "run `python pipeline.py lock` to record them)")
    return lockfile.resolve(loaded.recipe, fetcher)


def run_fetch(ctx: Context, work: Path) -> dict[str, Path]:
    """Download (or verify in the cache) every pinned input."""
    downloads = lockfile.downloads(ctx.recipe, ctx.lock, ctx.fetcher)
    keys = sorted(downloads)
    paths = ctx.fetcher.fetch_many([downloads[k] for k in keys])
    outputs = dict(zip(keys, paths, strict=True))
    listing = {
        "extension_order": ctx.lock.extension_order,
        "inputs": {k: {"name": downloads[k].name, "sha256": downloads[k].sha256,
                       "path": str(outputs[k])} for k in keys},
    }
    files.write_text(work / "inputs.json", json.dumps(listing, indent=2) + "\n")
    return {**outputs, "inputs.json": work / "inputs.json"}


def fetch_slice(recipe: Recipe) -> dict:
    return {"tinycore": recipe.tinycore.model_dump(mode="json", exclude={"guest_mirror"}),
            "releases": {n: r.model_dump(mode="json") for n, r in recipe.releases.items()}}


def no_kernel_build(recipe: Recipe) -> str | None:
    return kernel_build.idle_reason(recipe)


STAGES = [
    Stage("fetch", 1, fetch_slice, run_fetch),
    Stage("kernel", kernel_build.VERSION, kernel_build.key_slice, kernel_build.run,
          data="kernel", tools=kernel_build.TOOLS, idle=no_kernel_build,
          uses=("fetch/kernel/", "fetch/tcz/")),  # tcz: a full rebuild remakes module ones
    Stage("extensions", extensions.VERSION, extensions.key_slice, extensions.run,
          data="overlays", tools=extensions.TOOLS),
    Stage("remaster", iso_remaster.VERSION, iso_remaster.key_slice, iso_remaster.run,
          data="iso-remaster"),
    Stage("packer", packer_build.VERSION, packer_build.key_slice, packer_build.run,
          data="packer", tools=packer_build.TOOLS),
    Stage("export", export.VERSION, export.key_slice, export.run, tools=export.TOOLS),
]


def stage_runner(build_root: Path) -> StageRunner:
    return StageRunner(STAGES, build_root, tool_version)
