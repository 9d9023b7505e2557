"""Test disks for vm tests: an MBR with one Linux partition holding ext4 made from a tree,
and Tiny Core backups (mydata.tgz) as filetool.sh -b would have written them."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

from appliance.run import Runner

PART_START = 2048  # sectors: the partition starts at 1 MiB, as fdisk would put it


def fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def mydata(files: dict[str, tuple[bytes | str, int, int, int]],
           dirs: dict[str, tuple[int, int, int]] | None = None) -> bytes:
    """A mydata.tgz: path (relative to /) -> (content, mode, uid, gid), and the folders
    whose owner or mode matter (e.g. home/tc/.ssh) -> (mode, uid, gid)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (mode, uid, gid) in sorted((dirs or {}).items()):
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.uid, member.gid = tarfile.DIRTYPE, mode, uid, gid
            tar.addfile(member)
        for name, (content, mode, uid, gid) in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.uid, member.gid = len(data), mode, uid, gid
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def mbr(start: int, sectors: int) -> bytes:
    """A DOS partition table with one Linux partition (the disk shows up as sda1)."""
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def make_disk(tree: Path, image: Path, work: Path, size_mb: int = 48) -> Path:
    """A raw disk whose sda1 is ext4 made from `tree` (mkfs.ext4 -d)."""
    size = size_mb * 1024 * 1024
    with open(image, "wb") as f:
        f.truncate(size)
    runner = Runner(work, echo=lambda line: None)
    sectors = size // 512 - PART_START
    runner.run(["mkfs.ext4", "-q", "-F", "-L", "standin-test", "-d", tree,
                "-E", f"offset={PART_START * 512},root_owner=0:0", image, f"{sectors // 2}k"],
               log="disk")  # fmt: skip
    with open(image, "r+b") as f:
        f.write(mbr(PART_START, sectors))
    return image


