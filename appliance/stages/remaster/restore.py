"""mydata.tgz: the recipe's `restore` files, restored by Tiny Core into the live system.

tc-config restores the backup after loading the extensions and before /opt/bootsync.sh
(tinycorelinux/Core-scripts usr/bin/filetool.sh @ 0ed6e60): `tar -C / -zxf mydata.tgz`. The remaster puts it at the root of
the ISO, where `restore=sr0` looks and where the restore's scan of every device finds it
without a boot code.

The archive is deterministic (members sorted, mtime SOURCE_DATE_EPOCH, owners by number and
name, gzip without a timestamp) and safe to extract as root: member paths are relative,
without `.` or `..` parts; regular files and folders only (a device node, fifo, socket or
symlink in a listed folder is an error: a symlink could point the next member outside its
folder); never opt/bootlocal.sh or opt/bootsync.sh, which would replace the appliance's own.
File modes are 644, or 755 when the host file is executable, unless the recipe gives one:
git does not keep other permission bits, so only these are reproducible across checkouts.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
from pathlib import Path

from appliance.config import PROTECTED_PATHS, RestoreItem, check_guest_path
from appliance.errors import RemasterError
from appliance.tinycore.initrd import STAFF_GID, TC_UID

OWNERS = {"root": (0, 0, "root", "root"), "tc": (TC_UID, STAFF_GID, "tc", "staff")}


def members(item: RestoreItem) -> list[tuple[str, Path]]:
    """(member path, host path) of one recipe entry: the file, or the folder and its tree."""
    source = Path(item.source)
    if not source.exists() and not source.is_symlink():
        raise RemasterError(f"restore: {item.source}: no such file or folder",
                            "restore[].source is relative to the recipe file that lists it")
    found = [(item.path, source)]
    if source.is_dir() and not source.is_symlink():
        found += [(f"{item.path}/{p.relative_to(source).as_posix()}", p)
                  for p in sorted(source.rglob("*"))]
    return found


def check_member(name: str, host: Path) -> int:
    """The member's file type (stat.S_IFDIR or S_IFREG); anything else is an error."""
    try:
        check_guest_path(name)
    except ValueError as exc:
        raise RemasterError(f"restore: {host}: {exc}") from None
    if any(name == p or name.startswith(p + "/") for p in PROTECTED_PATHS):
        raise RemasterError(f"restore: {host} would restore /{name}, the appliance's own "
                            "boot script", "restore data never carries it: restore runs before it")
    mode = host.lstat().st_mode
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return stat.S_IFMT(mode)
    kind = "a symlink" if stat.S_ISLNK(mode) else "a device, fifo or socket"
    raise RemasterError(f"restore: {host} is {kind}; only regular files and folders are "
                        "restored", "copy the file itself into the restore folder")


def tar_member(name: str, host: Path, kind: int, item: RestoreItem, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.uid, info.gid, info.uname, info.gname = OWNERS[item.effective_owner]
    info.mtime = epoch
    if kind == stat.S_IFDIR:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        executable = host.stat().st_mode & 0o111
        info.mode = item.mode if item.mode is not None else (0o755 if executable else 0o644)
        info.size = host.stat().st_size
    return info


def mydata_tgz(items: list[RestoreItem], epoch: int) -> bytes | None:
    """The backup archive, or None when the recipe restores nothing."""
    if not items:
        return None
    chosen: dict[str, tuple[Path, RestoreItem]] = {}
    for item in items:
        for name, host in members(item):
            if name in chosen:
                raise RemasterError(f"restore: /{name} is listed twice ({chosen[name][0]} and "
                                    f"{host})")
            chosen[name] = (host, item)
    buf = io.BytesIO()
    # GNU format: busybox tar (Tiny Core's) reads its long names, not every pax header
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(chosen):
            host, item = chosen[name]
            info = tar_member(name, host, check_member(name, host), item, epoch)
            if info.isdir():
                tar.addfile(info)
            else:
                with open(host, "rb") as fh:
                    tar.addfile(info, fh)
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)
