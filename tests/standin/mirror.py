"""The tree the stand-in serves on http://127.0.0.1:PORT/, laid out exactly like upstream.

    11.x/x86_64/release/CorePure64-11.1.iso (+ .md5.txt)       tinycorelinux.net
    11.x/x86_64/release/src/kernel/linux-6.1.N-patched.txz, config-6.1.N-tinycore64
    11.x/x86_64/tcz/NAME.tcz (+ .md5.txt, .dep, .info, .list)
    github/<owner>/<repo>/releases/download/<tag>/<asset>      github.com

Assembled from the cached components (kernel, ISO, extensions, releases) with hardlinks,
and cached itself under the keys of those components. `build_all()` builds every piece and
reports how long each took; `recipe_overlay()` writes the versions the stand-in recipe
depends on (tests/standin/recipe.toml) into build/standin/standin.toml.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.fetch import sha256_file
from appliance.paths import build_root
from appliance.run import Runner
from appliance.tinycore import tcz
from tests.standin import cache, debfiles, extensions, registry, releases

if TYPE_CHECKING:
    from tests.standin.kernel import StandinKernel

RELEASE_DIR = "11.x/x86_64"
ISO_NAME = "CorePure64-11.1.iso"
DEFAULT_PORT = 8911
KERNEL_SRC_DIR = "release/src/kernel"  # below RELEASE_DIR, as on tc11's mirror
HOST = "127.0.0.1"
GUEST_HOST = "10.0.2.2"  # the host as QEMU user networking shows it to the guest
BUILDER_VERSION = "1"


def default_port() -> int:
    return int(os.environ.get("STANDIN_PORT", DEFAULT_PORT))


def standin_build_dir() -> Path:
    return build_root() / "standin"


def find_iso(kernel) -> Path:
    """The stand-in ISO (tests/standin/iso.py), built for this kernel if needed."""
    from tests.standin.iso import build_iso

    path = build_iso(kernel)
    return path / ISO_NAME if path.is_dir() else path


def link_tree(src: Path, dest: Path) -> None:
    """Hardlink every file of src into dest (same layout); copy across file systems."""
    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            releases.link_or_copy(path, target)


def build_mirror(kernel, iso: Path, ext_dir: Path, rel_dir: Path) -> Path:
    """The cached mirror tree for these components (see the module doc for the layout)."""
    material = {
        "builder": BUILDER_VERSION,
        "extensions": ext_dir.name, "releases": rel_dir.name, "kernel": kernel.path.name,
        "iso": sha256_file(iso),
        "code": cache.digest_files([Path(__file__)]),
    }

    def build(work: Path) -> dict:
        arch = work / RELEASE_DIR
        link_tree(ext_dir / "tcz", arch / "tcz")
        link_tree(rel_dir / "github", work / "github")
        link_tree(rel_dir / "release", arch / "release")
        target = arch / "release" / ISO_NAME
        releases.link_or_copy(iso, target)
        md5 = hashlib.md5(target.read_bytes()).hexdigest()
        (target.parent / f"{ISO_NAME}.md5.txt").write_text(tcz.md5_text(md5, ISO_NAME))
        return {"kernel_release": kernel.release}

    return cache.cached_build("mirror", material, build)


@dataclass
class Built:
    kernel: StandinKernel
    iso: Path
    extensions: Path
    releases: Path
    image: Path
    mirror: Path
    timings: dict[str, float]


def _timed(timings: dict[str, float], name: str, fn: Callable):
    start = time.monotonic()
    result = fn()
    timings[name] = time.monotonic() - start
    return result


def build_all(runner: Runner | None = None, port: int | None = None) -> Built:
    """Kernel, ISO, extensions, releases, image and mirror: each built once, then cached;
    also the recipe overlay for a server on `port` (default: default_port())."""
    from tests.standin.kernel import build_kernel

    timings: dict[str, float] = {}
    kernel = _timed(timings, "kernel", build_kernel)
    iso = _timed(timings, "iso", lambda: find_iso(kernel))
    ext_dir = _timed(timings, "extensions", lambda: extensions.build_extensions(kernel, runner))
    rel_dir = _timed(timings, "releases", lambda: releases.build_releases(kernel, runner))
    image = _timed(timings, "image", lambda: registry.build_image(runner))
    mirror = _timed(timings, "mirror", lambda: build_mirror(kernel, iso, ext_dir, rel_dir))
    recipe_overlay(kernel.release, releases.versions(runner or _quiet()), port or default_port())
    return Built(kernel, iso, ext_dir, rel_dir, image, mirror, timings)


def _quiet() -> Runner:
    return Runner(cache.component_dir("logs"), echo=lambda line: None)


def kernel_release_of(source_version: str) -> str:
    """The stand-in kernel's `uname -r`, known before it is built: Debian's linux-source
    6.1.192-2 is upstream 6.1.192, and the config adds LOCALVERSION -tinycore64 only."""
    return f"{debfiles.upstream_version(source_version)}-tinycore64"


def release_urls(name: str, port: int = DEFAULT_PORT) -> dict[str, str]:
    """releases.<name>.url and checksum_url, {version} left for the recipe to fill (pure)."""
    rel = releases.RELEASES[name]
    folder = f"http://{HOST}:{port}/{rel.folder('{version}')}"
    checksum = rel.checksum.replace("{asset}", "{url}", 1)
    if not checksum.startswith("{url}"):
        checksum = f"{folder}/{rel.checksum_name('{version}')}"
    return {"url": f"{folder}/{rel.asset_name('{version}')}", "checksum_url": checksum}


def overlay_text(kernel_release: str, versions: dict[str, str], port: int) -> str:
    """The recipe overlay with what follows the host's packages (and a non-default port)."""
    lines = ["# Written by `python -m tests.standin build`: the values of tests/standin/",
             "# recipe.toml that follow this host's Debian packages (and port). Pass it as a",
             "# second -c after tests/standin/recipe.toml.", "", "[tinycore]",
             f'kernel = "{kernel_release}"']
    if port != DEFAULT_PORT:
        lines += [f'mirrors = ["http://{HOST}:{port}/"]',
                  f'guest_mirror = "http://{GUEST_HOST}:{port}/"']
    # the kernel stage's source and config are named after the kernel release
    lines += ["", "[kernel]", f'config = "{KERNEL_SRC_DIR}/config-{kernel_release}"',
              f'source = "{KERNEL_SRC_DIR}/{releases.kernel_source_name(kernel_release)}"']
    for name, version in sorted(versions.items()):
        lines += ["", f"[releases.{name}]", f'version = "{version}"']
        if port != DEFAULT_PORT:
            lines += [f'{key} = "{value}"' for key, value in release_urls(name, port).items()]
    lines += moved_extras(port, registry.default_port())
    return "\n".join(lines) + "\n"


def moved_extras(port: int, registry_port: int) -> list[str]:
    """recipe.toml's entries beyond RELEASES that name a port: faasd's compose files (served
    beside the faasd double) and the images of the stand-in's registry (pure but for
    reading recipe.toml)."""
    recipe = tomllib.loads((Path(__file__).parent / "recipe.toml").read_text())
    lines: list[str] = []
    for name, rel in sorted(recipe.get("releases", {}).items()):
        base = f"http://{HOST}:{DEFAULT_PORT}/"
        if name not in releases.RELEASES and port != DEFAULT_PORT and rel["url"].startswith(base):
            moved = rel["url"].replace(base, f"http://{HOST}:{port}/", 1)
            lines += ["", f"[releases.{name}]", f'url = "{moved}"']
    old = f"{HOST}:{registry.DEFAULT_PORT}/"
    images = recipe.get("images", [])
    if registry_port != registry.DEFAULT_PORT and any(
            i.get("source", "").startswith(old) for i in images):
        for image in images:  # [[images]] is a list: the overlay restates all of it
            moved = {k: v.replace(old, f"{HOST}:{registry_port}/", 1) if isinstance(v, str)
                     else v for k, v in image.items()}
            lines += ["", "[[images]]"] + [f"{k} = {json.dumps(v)}" for k, v in moved.items()]
    return lines


def recipe_overlay(kernel_release: str, versions: dict[str, str], port: int) -> Path:
    path = standin_build_dir() / "standin.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(overlay_text(kernel_release, versions, port))
    return path
