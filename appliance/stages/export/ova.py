"""The OVA: a plain USTAR archive, `.ovf` first, then `.mf`, then the disk.

USTAR and nothing else: importers (virt-v2v's fast path among them) find each member at
one 512-byte header per member, so GNU long names or pax headers would move the disk.
Owners, modes and times are fixed, so the archive says nothing about the build host.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from appliance.errors import StageError

MODE = 0o644
USTAR_MAX_SIZE = 8 * 1024**3 - 1  # an 11-digit octal size field
USTAR_MAX_NAME = 100  # without the prefix field, which some readers ignore


def member_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, MODE
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.REGTYPE
    return info


def check_members(members: list[tuple[str, Path]]) -> None:
    """Refuse, before writing, what USTAR cannot hold; name the file and what to change."""
    for name, path in members:
        if len(name.encode()) > USTAR_MAX_NAME or "/" in name:
            raise StageError(f"OVA member name '{name}' is longer than {USTAR_MAX_NAME} bytes "
                             "or has a folder", "shorten the recipe's name or version")
        if path.stat().st_size > USTAR_MAX_SIZE:
            raise StageError(f"{path}: {path.stat().st_size} bytes does not fit in a USTAR "
                             "OVA member (8 GiB at most)",
                             "shrink the disk's contents, or export only qcow2 "
                             "(export.formats = [\"qcow2\"])")


def write(out: Path, members: list[tuple[str, Path]], mtime: int) -> Path:
    """Pack (member name, file) pairs, in the order given, into `out`."""
    check_members(members)
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, path in members:
            with open(path, "rb") as fh:
                tar.addfile(member_info(name, path.stat().st_size, mtime), fh)
    return out
