"""Lays out one custom extension's file tree from its overlay folder and the fetched releases.

The tree is what mksquashfs packs: `root/` copied (no symlinks: tce-load's `cp -ais` would
point them into /tmp/tcloop), release files placed where extension.toml says, the container
image archives for an images extension, then the modes extension.toml names. Nothing a
service writes at run time may be shipped: it would become a read-only symlink.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from appliance.config import Image
from appliance.errors import StageError
from appliance.stages.extensions import images as imagelib
from appliance.stages.extensions import overlay_spec
from appliance.stages.extensions.overlay_spec import ExtensionSpec, Install

# Written at run time by any service, whatever the extensions declare.
ALWAYS_RUNTIME = ("run", "var/run", "tmp", "var/log")


def _fail(spec: ExtensionSpec, message: str, hint: str | None = None) -> StageError:
    return StageError(f"extensions: overlays/{spec.name}: {message}", hint)


def _mode_for(src_mode: int, is_dir: bool) -> int:
    if is_dir:
        return 0o755
    return 0o755 if src_mode & 0o111 else 0o644


def copy_root(spec: ExtensionSpec, root: Path, tree: Path) -> None:
    """root/ into tree with normalised modes; symlinks and special files are refused."""
    tree.mkdir(parents=True, exist_ok=True)
    tree.chmod(0o755)
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            src = Path(dirpath) / name
            rel = src.relative_to(root).as_posix()
            st = src.lstat()
            if not overlay_spec.SAFE_PATH.match(rel):
                raise _fail(spec, f"root/{rel}: the name has characters a .tcz must not carry")
            if stat.S_ISLNK(st.st_mode):
                raise _fail(spec, f"root/{rel} is a symlink (-> {os.readlink(src)})",
                            "tce-load links every file of a .tcz into / with cp -ais, so a "
                            "symlink would end up pointing into /tmp/tcloop; create it in "
                            f"usr/local/tce.installed/{spec.name} instead")
            dest = tree / rel
            if stat.S_ISDIR(st.st_mode):
                dest.mkdir(exist_ok=True)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(src, dest)
            else:
                raise _fail(spec, f"root/{rel} is not a regular file or folder")
            dest.chmod(_mode_for(st.st_mode, stat.S_ISDIR(st.st_mode)))


def _place(spec: ExtensionSpec, tree: Path, rel: str, data_from, mode: int) -> None:
    """Write one file at tree/rel (parents 0755); a second writer of a path is an error."""
    dest = tree / rel
    if dest.exists():
        raise _fail(spec, f"{rel} is placed twice (root/ and an install, or two installs)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for parent in PurePosixPath(rel).parents:
        (tree / parent).chmod(0o755)
    with open(dest, "wb") as out:
        shutil.copyfileobj(data_from, out)
    dest.chmod(mode)


def install_release(spec: ExtensionSpec, inst: Install, releases: dict[str, Path],
                    tree: Path) -> None:
    """One [[install]]: a release file, or the members of a release tarball, into the tree."""
    path = releases.get(inst.release)
    if path is None:
        raise _fail(spec, f"install: release '{inst.release}' is not in the recipe's releases",
                    f"add [releases.{inst.release}] to the recipe")
    mode = int(inst.mode, 8)
    if inst.members is None:
        rel = inst.to + path.name if inst.to.endswith("/") else inst.to
        with open(path, "rb") as fh:
            _place(spec, tree, rel, fh, mode)
        return
    try:
        tar = tarfile.open(path)
    except tarfile.TarError as exc:
        raise _fail(spec, f"install: release '{inst.release}' ({path.name}) is not a tar "
                          f"archive ({exc}), but members are listed") from None
    with tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        for pattern in inst.members:
            matched = [n for n in sorted(members) if fnmatch.fnmatchcase(n, pattern)
                       and not any(fnmatch.fnmatchcase(n, e) for e in inst.exclude)]
            if not matched:
                raise _fail(spec, f"install: release '{inst.release}' ({path.name}) has no "
                                  f"member matching '{pattern}'; it has: "
                                  f"{', '.join(sorted(members)) or 'no files'}")
            for name in matched:
                _place(spec, tree, inst.to + PurePosixPath(name).name,
                       tar.extractfile(members[name]), mode)


def place_images(spec: ExtensionSpec, tree: Path, layouts: Sequence[tuple[Image, Path]],
                 epoch: int) -> None:
    """The image archives and images.lst (what the faasd init script imports)."""
    assert spec.images is not None
    dest = tree / spec.images.dest
    dest.mkdir(parents=True, exist_ok=True)
    for parent in [*PurePosixPath(spec.images.dest).parents, PurePosixPath(spec.images.dest)]:
        (tree / parent).chmod(0o755)
    for image, layout in layouts:
        imagelib.write_archive(layout, image.name, dest / imagelib.archive_name(image.name), epoch)
    (dest / "images.lst").write_text(imagelib.list_text([i for i, _ in layouts]))
    (dest / "images.lst").chmod(0o644)


def apply_files(spec: ExtensionSpec, tree: Path) -> None:
    for rel, attrs in sorted(spec.files.items()):
        path = tree / rel
        if not path.exists():
            raise _fail(spec, f"files: '{rel}' is not in the extension (neither in root/ nor "
                              "placed by an [[install]])")
        if attrs.mode:
            path.chmod(int(attrs.mode, 8))


def check_runtime(spec: ExtensionSpec, tree: Path, declared: dict[str, str]) -> None:
    """declared: a runtime path -> the extension whose service writes it."""
    prefixes = list(declared) + [p for p in ALWAYS_RUNTIME if p not in declared]
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            rel = (Path(dirpath) / name).relative_to(tree).as_posix()
            hit = overlay_spec.covers(rel, prefixes)
            if hit:
                who = declared.get(hit, "a service")
                raise _fail(spec, f"ships {rel}, below {hit}, which {who} writes at run time",
                            "tce-load would make it a read-only symlink into /tmp/tcloop; "
                            "create it at run time (the init script) instead")


def stage_tree(spec: ExtensionSpec, folder: Path, tree: Path, releases: dict[str, Path],
               layouts: Sequence[tuple[Image, Path]], runtime: dict[str, str],
               epoch: int) -> None:
    """The complete file tree of one extension, ready for mksquashfs."""
    shutil.rmtree(tree, ignore_errors=True)
    copy_root(spec, folder / "root", tree)
    for inst in spec.install:
        install_release(spec, inst, releases, tree)
    if spec.images is not None:
        place_images(spec, tree, layouts, epoch)
    apply_files(spec, tree)
    check_runtime(spec, tree, runtime)
