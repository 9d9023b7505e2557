"""The stand-in's cpio writer is the product's (appliance/tinycore/cpio.py, re-exported here
so the stand-in's modules keep importing `tests.standin.cpio`), plus device nodes, which only
the stand-in's own initramfs and test disks carry."""

import stat

from appliance.tinycore.cpio import (  # noqa: F401
    Entry,
    directory,
    file,
    gzip_newc,
    mtimes,
    newc,
    owned,
    read_gzip_newc,
    read_newc,
    sorted_entries,
    symlink,
    tree,
    with_parents,
)


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))
