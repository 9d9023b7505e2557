"""The live ISO's /cde: every extension of the appliance, and the few it loads at boot.

Tiny Core's `cde` boot code makes tce-setup load `<cdrom>/cde/onboot.lst` from
`<cdrom>/cde/optional/` (tinycorelinux/Core-scripts usr/bin/tce-setup @ 0ed6e60), with no network. /cde/optional carries
the full set (Tiny Core's, the kernel stage's and ours) with their `.md5.txt` and `.dep`
files, so the installer copies them from the CD; /cde/onboot.lst names only what the install
needs (the recipe's `live.onboot`: openssh and the install tools), with every dependency
listed before its dependents, so the live system never loads containerd or faasd.

Where the set comes from: the extensions stage's extensions.json (the full load order, with
path, md5 and deps) when that stage builds; otherwise the fetch stage's Tiny Core extensions
in the lock's order (and the kernel stage's, from its modules.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import DependencyError, RemasterError
from appliance.fetch import md5_file
from appliance.tinycore import repository as tinycore

CDE = "/cde"


@dataclass(frozen=True)
class Extension:
    name: str  # "openssh.tcz"
    path: Path  # the .tcz on the build host
    deps: tuple[str, ...]  # concrete names ("ipv6-netfilter-6.1.192-tinycore64.tcz")
    md5: str
    dep_file: Path | None = None  # a built NAME.tcz.dep to copy as it is (-KERNEL spelling)


def _extension(name: str, path: Path, deps, dep_file: Path | None = None,
               md5: str | None = None) -> Extension:
    if not path.is_file():
        raise RemasterError(f"remaster: {name}: {path} is missing",
                            "rebuild the stage that makes it (python pipeline.py build)")
    actual = md5_file(path)
    if md5 is not None and md5 != actual:
        raise RemasterError(f"remaster: {name}: md5 {actual} does not match the {md5} recorded "
                            "for it", "rebuild with --force extensions")
    return Extension(name, path, tuple(deps), actual, dep_file)


def from_fetch(fetched: dict[str, Path], order: list[str],
               deps: dict[str, list[str]]) -> list[Extension]:
    """Tiny Core's extensions as the fetch stage downloaded them, in the lock's load order."""
    missing = [n for n in order if f"tcz/{n}" not in fetched]
    if missing:
        raise RemasterError(f"remaster: the fetch stage has no {', '.join(missing)}",
                            "run `python pipeline.py build --until fetch`")
    return [_extension(n, fetched[f"tcz/{n}"], deps.get(n, [])) for n in order]


def from_modules_json(outputs: dict[str, Path]) -> list[Extension]:
    """The kernel stage's module extensions (modules.json: extensions[].name, deps)."""
    listing = json.loads(outputs["modules.json"].read_text())
    return [_extension(e["name"], outputs[e["name"]], e.get("deps", []))
            for e in listing.get("extensions", [])]


def from_listing(listing_path: Path, outputs: dict[str, Path]) -> list[Extension]:
    """The extensions stage's extensions.json: {order, extensions: {name: {path, md5, deps}}};
    relative paths are inside that stage's folder, where built .dep files lie too."""
    try:
        listing = json.loads(listing_path.read_text())
        order, entries = listing["order"], listing["extensions"]
    except (OSError, ValueError, KeyError) as exc:
        raise RemasterError(f"remaster: {listing_path} is not a usable extension listing "
                            f"({exc})", "rebuild with --force extensions") from None
    result = []
    for name in order:
        entry = entries.get(name)
        if not isinstance(entry, dict) or "path" not in entry:
            raise RemasterError(f"remaster: {listing_path}: no path for {name}",
                                "rebuild with --force extensions")
        path = Path(entry["path"])
        path = path if path.is_absolute() else listing_path.parent / path
        dep_file = outputs.get(f"{name}.dep")
        result.append(_extension(name, path, entry.get("deps", []), dep_file, entry.get("md5")))
    return result


def combine(*sets: list[Extension]) -> list[Extension]:
    """One list in load order; the same name from two sources is a build error."""
    seen: dict[str, Extension] = {}
    for ext in (e for s in sets for e in s):
        if ext.name in seen and seen[ext.name].path != ext.path:
            raise RemasterError(f"remaster: {ext.name} comes from two places: "
                                f"{seen[ext.name].path} and {ext.path}")
        seen.setdefault(ext.name, ext)
    return list(seen.values())


def onboot_order(extensions: list[Extension], wanted: list[str], kernel: str) -> list[str]:
    """The `live.onboot` names and everything they depend on, dependencies first."""
    by_name = {e.name: e for e in extensions}
    try:
        roots = [tinycore.parse_dep(w, kernel, source="live.onboot")[0] for w in wanted]
        order = tinycore.order({e.name: e.deps for e in extensions}, roots)
    except DependencyError as exc:
        raise RemasterError(f"remaster: {exc.message}", exc.hint) from None
    absent = [n for n in order if n not in by_name]
    if absent:
        raise RemasterError(
            f"remaster: the live ISO must load {', '.join(absent)} (live.onboot or a "
            "dependency), and the appliance's extension set has no such extension",
            "add it to tinycore.extensions in the recipe (then `python pipeline.py lock`)")
    return order


def dep_text(ext: Extension) -> bytes | None:
    if ext.dep_file is not None and ext.dep_file.is_file():
        return ext.dep_file.read_bytes()
    return "".join(f"{d}\n" for d in ext.deps).encode() if ext.deps else None


def tree(extensions: list[Extension], onboot: list[str]) -> Iterator[tuple[str, bytes | Path]]:
    """(path on the ISO, contents) of every file under /cde, in a fixed order."""
    yield f"{CDE}/onboot.lst", "".join(f"{n}\n" for n in onboot).encode()
    for ext in extensions:
        base = f"{CDE}/optional/{ext.name}"
        yield base, ext.path
        yield f"{base}.md5.txt", f"{ext.md5}  {ext.name}\n".encode()  # md5sum -c format
        deps = dep_text(ext)
        if deps is not None:
            yield f"{base}.dep", deps
