"""Keyed build cache for the stand-in's components: built once per set of inputs.

`cached_build("rootfs", key_material, build)` returns `cache_root()/standin/rootfs/<key>/`.
The build runs in a `.build-<key>-<pid>` folder beside it and is renamed into place only
when it returned, so a killed build never looks finished; a hit runs nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from appliance.paths import REPO, cache_root, claim

INFO = "info.json"
KEEP = 2  # older entries of a component are pruned after a successful build


def component_dir(component: str) -> Path:
    return cache_root() / "standin" / component


def digest_files(paths: list[Path]) -> dict[str, str]:
    """sha256 of each file (and of every file under each folder), for key material.

    Paths inside the checkout are keyed relative to it, so a moved clone keeps its cache."""
    result = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            mode = f.stat().st_mode & 0o777
            shown = f.resolve().relative_to(REPO) if f.resolve().is_relative_to(REPO) else f
            result[f"{shown}:{mode:o}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return result


def key_of(material: dict) -> str:
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cached_build(component: str, material: dict, build: Callable[[Path], dict | None]) -> Path:
    """The finished folder for `material`, building it with `build(work_dir)` if needed."""
    base = component_dir(component)
    key = key_of(material)
    final = base / key
    if (final / INFO).exists():
        return final
    claim(cache_root())  # the pipeline's cache: `clean --cache` may delete it
    base.mkdir(parents=True, exist_ok=True)
    remove_dead_builds(base)
    work = base / f".build-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    start = time.monotonic()
    try:
        extra = build(work) or {}
        info = {"key": key, "seconds": round(time.monotonic() - start, 1), **extra}
        (work / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(base, keep=final)
    return final


def remove_dead_builds(base: Path) -> None:
    for path in base.glob(".build-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def prune(base: Path, keep: Path) -> None:
    entries = sorted((p for p in base.iterdir() if (p / INFO).exists() and p != keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def info(path: Path) -> dict:
    return json.loads((path / INFO).read_text())
