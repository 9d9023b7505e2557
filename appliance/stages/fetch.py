"""The fetch stage: download (or verify in the cache) every pinned input."""

from __future__ import annotations

import json
from pathlib import Path

from appliance import files
from appliance import lock as lockfile
from appliance.config import Recipe
from appliance.engine import Stage


def key_slice(recipe: Recipe) -> dict:
    return {"tinycore": recipe.tinycore.model_dump(mode="json", exclude={"guest_mirror"}),
            "releases": {n: r.model_dump(mode="json") for n, r in recipe.releases.items()}}


def extra_key(ctx) -> dict:
    """Keyed by the exact pins: a new pin of the same version refetches."""
    return {k: p.sha256 for k, p in sorted(ctx.lock.pins.items())}


def run(ctx, work: Path) -> dict[str, Path]:
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


STAGE = Stage("fetch", 1, key_slice, run, extra=extra_key)
