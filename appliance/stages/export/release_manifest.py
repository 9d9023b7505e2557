"""out/manifest.json: what went into the deliverables and what made them.

The recipe (as a digest of its canonical JSON), every pinned input, every output, the tool
and library versions, each stage's time and the accelerator Packer used, so that a nightly
image can be traced back to exactly what built it.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

from appliance import files
from appliance.config import Recipe
from appliance.engine import STAMP, digest_json
from appliance.lock import Lock
from appliance.tools import tool_version

FORMAT = 1
HOST_TOOLS = {
    "qemu-img": ("qemu-img", "--version"),
    "qemu-system-x86_64": ("qemu-system-x86_64", "--version"),
    "mksquashfs": ("mksquashfs", "-version"),
    "packer": ("packer", "version"),
}
PYTHON_PACKAGES = ("pycdlib", "jinja2", "requests", "python-hcl2", "pydantic")


def recipe_digest(recipe: Recipe) -> str:
    """sha256 of the recipe as canonical JSON (sorted keys, no spaces)."""
    return digest_json(recipe.model_dump(mode="json"))


def inputs(lock: Lock) -> list[dict]:
    return [{"key": p.key, "name": p.name, "version": p.version, "url": p.url,
             "sha256": p.sha256} for p in sorted(lock.pins.values(), key=lambda p: p.key)]


def outputs(digests: dict[Path, str]) -> list[dict]:
    """Each deliverable with its size and sha256 (hashed once by the caller: they are big)."""
    return [{"name": f.name, "size": f.stat().st_size, "sha256": digest}
            for f, digest in digests.items()]


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def tool_versions(packer_version: str | None) -> dict:
    """Host tools as they report themselves; Packer as the packer stage recorded it (the
    binary that built the disk, which may since have been upgraded)."""
    tools = {name: tool_version(argv) for name, argv in HOST_TOOLS.items()}
    if packer_version:
        tools["packer"] = packer_version
    return {"tools": tools, "python": platform.python_version(),
            "python_packages": {p: package_version(p) for p in PYTHON_PACKAGES}}


def stage_timings(build_root: Path, stages: list[str]) -> dict[str, float]:
    """Seconds each finished stage took when it last ran (from its stamp.json)."""
    result = {}
    for stage in stages:
        try:
            stamp = json.loads((build_root / stage / STAMP).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stamp.get("seconds"), int | float):
            result[stage] = stamp["seconds"]
    return result


def build(*, recipe: Recipe, lock: Lock, digests: dict[Path, str], packer: dict,
          timings: dict) -> dict:
    """The manifest as data; `packer` is the packer stage's build.json."""
    return {
        "format": FORMAT,
        "name": recipe.name,
        "version": recipe.version,
        "recipe_sha256": recipe_digest(recipe),
        "source_date_epoch": recipe.effective_source_date_epoch(),
        "inputs": inputs(lock),
        "outputs": outputs(digests),
        **tool_versions(packer.get("packer_version")),
        "timings": {"stages": timings, "packer_phases": packer.get("phases", {})},
        "accelerator": packer.get("accelerator"),
        "install_mode": packer.get("install_mode"),
        "root_fs": packer.get("root_fs"),
    }


def write(path: Path, manifest: dict) -> Path:
    files.write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
