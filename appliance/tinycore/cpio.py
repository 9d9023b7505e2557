"""gzip'd newc cpio archives (Linux initramfs), written and read in Python.

The writer of the extra initrds the remaster adds (boot/appliance.gz, boot/build.gz) and of
the stand-in's corepure64.gz (tests/standin/cpio.py re-exports it). In Python rather than
with cpio(1) so that device nodes, setuid root files and Tiny Core's owners (tc:staff) need
no root, and so the bytes depend only on the entries: sorted by path, one fixed mtime
(SOURCE_DATE_EPOCH), inode numbers in that order, a zero gzip timestamp.
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, without a leading /
    mode: int  # st_mode, file type included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0


def directory(path: str, perm: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, stat.S_IFDIR | perm, uid=uid, gid=gid)


def file(path: str, data: bytes, perm: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def owned(entry: Entry, uid: int, gid: int, perm: int | None = None) -> Entry:
    """The same entry with other owners (and permission bits, if given)."""
    mode = entry.mode if perm is None else stat.S_IFMT(entry.mode) | perm
    return replace(entry, uid=uid, gid=gid, mode=mode)


def tree(root: Path, prefix: str) -> list[Entry]:
    """The files, directories and symlinks under a host directory, placed at `prefix`.

    Permission bits come from the host; owners are root (set others with `owned`)."""
    entries = [directory(prefix)] if prefix else []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        name = f"{prefix}/{rel}" if prefix else rel
        if path.is_symlink():
            entries.append(symlink(name, str(path.readlink())))
        elif path.is_dir():
            entries.append(directory(name, path.stat().st_mode & 0o7777))
        else:
            entries.append(file(name, path.read_bytes(), path.stat().st_mode & 0o7777))
    return entries


def with_parents(entries: list[Entry]) -> list[Entry]:
    """Adds a directory entry for every parent not listed, ahead of its children."""
    seen = {e.path for e in entries}
    out: list[Entry] = []
    for entry in entries:
        for parent in reversed(PurePosixPath(entry.path).parents[:-1]):
            if str(parent) not in seen:
                seen.add(str(parent))
                out.append(directory(str(parent)))
        out.append(entry)
    return out


def sorted_entries(entries: list[Entry]) -> list[Entry]:
    """Entries by path (a parent sorts before its children); a path given twice is a bug."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise ValueError(f"cpio: {entry.path} is given twice")
        by_path[entry.path] = entry
    return [by_path[p] for p in sorted(by_path)]


def newc(entries: list[Entry], mtime: int = 0) -> bytes:
    """An uncompressed newc archive: sorted, one mtime, inode numbers in order."""
    chunks = []
    for ino, entry in enumerate(with_parents(sorted_entries(entries)), 1):
        chunks.append(_record(ino, entry, mtime))
    chunks.append(_record(0, Entry("TRAILER!!!", 0), 0))
    return b"".join(chunks)


def gzip_newc(entries: list[Entry], mtime: int = 0, level: int = 9) -> bytes:
    """newc, gzip'd with a zero gzip timestamp (the archive's own mtimes say the date)."""
    return gzip.compress(newc(entries, mtime), compresslevel=level, mtime=0)


def _record(ino: int, entry: Entry, mtime: int) -> bytes:
    encoded = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino, entry.mode, entry.uid, entry.gid, nlink, mtime, len(entry.data),
        0, 0, entry.rdev[0], entry.rdev[1], len(encoded), 0,
    )  # fmt: skip
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return header + encoded + _pad(len(header) + len(encoded)) + entry.data + _pad(len(entry.data))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def read_newc(data: bytes) -> list[Entry]:
    """Parses an uncompressed newc archive: its entries in archive order.

    Several archives one after the other (as the kernel accepts them) are read as one;
    anything that is not a newc record is a ValueError."""
    return [Entry(name, f[1], body, (f[9], f[10]), f[2], f[3]) for f, name, body in _records(data)]


def read_gzip_newc(data: bytes) -> list[Entry]:
    """Entries of a gzip'd newc archive such as corepure64.gz (ValueError when it is not)."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a gzip file ({exc})") from None
    return read_newc(raw)


def mtimes(data: bytes) -> set[int]:
    """Every mtime an uncompressed newc archive records (for tests)."""
    return {f[5] for f, _name, _body in _records(data)}


def _records(data: bytes):
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # cpio(1) pads an archive to 512 bytes; another may follow
            nonzero = len(data) - len(data[pos:].lstrip(b"\0"))
            pos = nonzero - nonzero % 4
            continue
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"no newc header at offset {pos}")
        try:
            fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ValueError(f"damaged newc header at offset {pos}") from None
        namesize, filesize = fields[11], fields[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode(errors="replace")
        pos += 110 + namesize + _padlen(110 + namesize)
        if pos + filesize > len(data):
            raise ValueError(f"{name}: truncated newc archive")
        if name != "TRAILER!!!":
            yield fields, name, data[pos : pos + filesize]
        pos += filesize + _padlen(filesize)


def _padlen(length: int) -> int:
    return -length % 4
