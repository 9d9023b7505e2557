"""Tiny Core extensions (.tcz) and their metadata, byte-identical for identical inputs.

A .tcz is a squashfs 4 image (no xattrs, which tc11's SQUASHFS_XATTR=n cannot read),
loop-mounted read-only at /tmp/tcloop/NAME and symlinked into /. Beside it the mirror carries NAME.tcz.md5.txt
(md5sum output), NAME.tcz.dep (direct dependencies, one per line), NAME.tcz.info (fields in
Tiny Core's order) and NAME.tcz.list (the files, without a leading /).

Ownership is explicit, not taken from the build host: every entry is root:root with the mode
it has in the tree (or the owner the caller names for it), except usr/local/tce.installed and
its scripts, which must be root:staff 775 (corebook part2/ch06: "faulty permissions ... may
break extension loading"). mksquashfs's -all-root would drop that gid, so a pseudo file
(`PATH m MODE UID GID`) sets every entry.
Timestamps come from SOURCE_DATE_EPOCH (-mkfs-time, -all-time).

Two formats (Squashfs): TINYCORE, Tiny Core's own parameters (corebook part3/ch01: gzip, 4 KiB
blocks), for what stands for an upstream extension; and APPLIANCE, for the extensions the
extensions stage makes (docs/decisions.md#extension-compression).
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.run import Runner


@dataclass(frozen=True)
class Squashfs:
    """How mksquashfs compresses an extension: compressor, block size, compressor options."""

    compression: str
    block_size: int
    options: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return ["-b", str(self.block_size), "-comp", self.compression, *self.options]


TINYCORE = Squashfs("gzip", 4096)
# lz4, high-compression mode, 128 KiB blocks: as small as TINYCORE for containerd.tcz (69 MB
# both) and read 2.5-4x faster by the squashfs module under TCG (containerd's first start 0.6
# s instead of 1.5 s, ctr's 0.4 s instead of 0.85 s: measured on the stand-in). tc11's kernel
# has SQUASHFS_LZ4=y (kernel/tc11-config-5.4.3-tinycore64); kernel/options.toml requires it.
# 128 KiB blocks: tc11's tce-load mounts without bs=4096 (Core-scripts bf3b533), so any block
# size mounts; the cost is RAM: squashfs keeps block-sized buffers per mounted extension.
APPLIANCE = Squashfs("lz4", 131072, ("-Xhc",))
STAFF_GID = 50  # Tiny Core's group `staff` (/etc/group in core.gz)
TCE_INSTALLED = "usr/local/tce.installed"
TCE_INSTALLED_MODE = 0o775

# NAME.tcz.info field order (corebook part3/ch04, nano example). Title and Size are computed.
INFO_FIELDS = (
    "Title", "Description", "Version", "Author", "Original-site", "Copying-policy",
    "Size", "Extension_by", "Tags", "Comments", "Change-log", "Current",
)
REQUIRED_INFO = ("Description", "Version", "Author", "Original-site", "Copying-policy")
COMPUTED_INFO = ("Title", "Size")
INFO_INDENT = 16  # values start in one column, continuation lines too

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Pseudo definitions split on blanks; names needing escapes are refused instead of escaped.
_PSEUDO_SAFE = re.compile(r"^[A-Za-z0-9._+@:,=/-]+$")


def tcz_name(name: str) -> str:
    """'openssh' or 'openssh.tcz' -> 'openssh.tcz'; anything path-like is refused."""
    stem = name.removesuffix(".tcz")
    if not _NAME_RE.match(stem):
        raise ValueError(f"not a valid extension name: {name!r}")
    return f"{stem}.tcz"


def mksquashfs_argv(
    tree: Path, out: Path, source_date_epoch: int, pseudo_file: Path | None = None,
    squashfs: Squashfs = TINYCORE,
) -> list[str]:
    """The mksquashfs command for one extension (pure)."""
    argv = [
        "mksquashfs", str(tree), str(out), *squashfs.argv(),
        "-noappend", "-no-xattrs", "-no-progress", "-quiet",
        # The top directory becomes /tmp/tcloop/NAME: readable by everyone, owned by root.
        "-root-mode", "755", "-root-uid", "0", "-root-gid", "0",
        "-mkfs-time", str(source_date_epoch), "-all-time", str(source_date_epoch),
    ]
    if pseudo_file is not None:
        argv += ["-pf", str(pseudo_file)]
    return argv


def _entries(tree: Path) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under tree, sorted, symlinks not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found.append((path.relative_to(tree).as_posix(), path.lstat()))
    return sorted(found)


def _owner(rel: str, st: os.stat_result) -> tuple[int, int, int]:
    """(mode, uid, gid) an entry gets inside the extension."""
    mode = stat.S_IMODE(st.st_mode)
    if rel == TCE_INSTALLED or rel.startswith(TCE_INSTALLED + "/"):
        if stat.S_ISLNK(st.st_mode):
            return mode, 0, STAFF_GID
        return TCE_INSTALLED_MODE, 0, STAFF_GID
    return mode, 0, 0


def pseudo_definitions(tree: Path,
                       owners: Mapping[str, tuple[int, int]] | None = None) -> list[str]:
    """One `PATH m MODE UID GID` line per entry: ownership independent of the build host.
    `owners` (relative path -> uid, gid) overrides root:root for the entries it names."""
    lines = []
    for rel, st in _entries(tree):
        if not _PSEUDO_SAFE.match(rel):
            raise ValueError(f"{tree}: file name {rel!r} has characters a .tcz must not carry")
        mode, uid, gid = _owner(rel, st)
        if owners and rel in owners and (uid, gid) == (0, 0):
            uid, gid = owners[rel]
        lines.append(f"{rel} m {mode:o} {uid} {gid}")
    return lines


def list_text(tree: Path) -> str:
    """NAME.tcz.list: every non-directory, without a leading /, sorted."""
    files = [rel for rel, st in _entries(tree) if not stat.S_ISDIR(st.st_mode)]
    return "".join(f"{rel}\n" for rel in files)


def dep_text(deps: Sequence[str]) -> str:
    """NAME.tcz.dep: one NAME.tcz per line (a -KERNEL placeholder stays as written)."""
    return "".join(f"{d}\n" for d in dict.fromkeys(tcz_name(d) for d in deps))


def md5_text(md5: str, filename: str) -> str:
    """md5sum's own output format, which tce-load checks with `md5sum -c`."""
    return f"{md5}  {filename}\n"


def human_size(nbytes: int) -> str:
    """Size as Tiny Core's .info files give it: 84K, 1.2M."""
    if nbytes < 1024 * 1024:
        return f"{max(1, math.ceil(nbytes / 1024))}K"
    return f"{nbytes / (1024 * 1024):.1f}M"


def info_text(filename: str, info: Mapping[str, str], size: int, source_date_epoch: int) -> str:
    """NAME.tcz.info in Tiny Core's field order; multi-line values become indented lines."""
    unknown = sorted(set(info) - set(INFO_FIELDS))
    computed = sorted(set(info) & set(COMPUTED_INFO))
    missing = [f for f in REQUIRED_INFO if not info.get(f)]
    if unknown or computed or missing:
        raise ValueError(
            f"{filename}: .info fields: unknown {unknown}, computed {computed}, missing {missing}"
        )
    day = datetime.datetime.fromtimestamp(source_date_epoch, datetime.UTC).strftime("%Y/%m/%d")
    current = f"{day} Version {info['Version']}"
    values = {
        "Extension_by": "tc-appliance", "Tags": "-", "Comments": "-",
        "Change-log": current, "Current": current,
        **info, "Title": filename, "Size": human_size(size),
    }
    out = []
    for field in INFO_FIELDS:
        first, *rest = str(values[field]).splitlines() or ["-"]
        out.append(f"{field + ':':<{INFO_INDENT}}{first}".rstrip())
        out += [f"{'':<{INFO_INDENT}}{line}".rstrip() for line in rest]
    return "\n".join(out) + "\n"


def build_tcz(
    tree: Path,
    out_dir: Path,
    name: str,
    deps: Sequence[str],
    info: Mapping[str, str],
    runner: Runner,
    source_date_epoch: int,
    *,
    log: str | None = "tcz",
    owners: Mapping[str, tuple[int, int]] | None = None,
    squashfs: Squashfs = TINYCORE,
) -> Path:
    """Write NAME.tcz and its .md5.txt, .dep (when there are deps), .info and .list."""
    filename = tcz_name(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / filename
    pseudo = out_dir / f".{filename}.pseudo"
    pseudo.write_text("\n".join(pseudo_definitions(tree, owners)) + "\n", encoding="utf-8")
    try:
        # mksquashfs 4.5 refuses SOURCE_DATE_EPOCH beside -mkfs-time/-all-time, and only
        # clamps newer times to it: the options (all times, exactly) are what we want.
        runner.run(mksquashfs_argv(tree, out, source_date_epoch, pseudo, squashfs), log=log,
                   env={"SOURCE_DATE_EPOCH": None})
    finally:
        pseudo.unlink(missing_ok=True)
    data = out.read_bytes()
    _write(out_dir / f"{filename}.md5.txt", md5_text(hashlib.md5(data).hexdigest(), filename))
    dep_path = out_dir / f"{filename}.dep"
    if deps:
        _write(dep_path, dep_text(deps))
    else:
        dep_path.unlink(missing_ok=True)  # no stale .dep from an earlier build
    _write(out_dir / f"{filename}.info", info_text(filename, info, len(data), source_date_epoch))
    _write(out_dir / f"{filename}.list", list_text(tree))
    return out


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
