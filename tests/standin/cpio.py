"""The stand-in's cpio writer is the product's: appliance/cpio.py (re-exported here so the
stand-in's modules keep importing `tests.standin.cpio`)."""

from appliance.cpio import (  # noqa: F401
    Entry,
    char_device,
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
