"""The base ISO, opened and changed in-process with pycdlib (no loop mounts, no root).

pycdlib keeps what makes the ISO boot when it writes: the El Torito catalog (no-emulation
isolinux.bin), the boot-info-table inside isolinux.bin (rewritten for its new location) and
the isohybrid MBR (its partition resized), plus Rock Ridge and Joliet.

Files are found by their Rock Ridge paths, never by assumed ISO 9660 names: xorriso-made
ISOs (the stand-in's, and real ones made with `-l`) carry lowercase ISO 9660 names such as
`isolinux.cfg;1`, for which pycdlib reports interchange level 3 and refuses additions with
matching names. The level is raised to 4 (which only relaxes pycdlib's name checks; nothing
else in the image changes): a replaced file keeps its original ISO 9660 name, and a new
file gets an uppercase level-3 name (A-Z 0-9 _, at most 30 characters) so that readers
without Rock Ridge still see valid names; isolinux compares names without regard to case.

pycdlib stamps `time.time()` into new directory records, Rock Ridge TF entries and the
volume modification date, through the local time zone. `fixed_clock` makes that clock
SOURCE_DATE_EPOCH in UTC while pycdlib works, so the same inputs give the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from pathlib import Path, PurePosixPath

import pycdlib
from pycdlib import dates, headervd, inplaceeditor, pycdlibexception, utils
from pycdlib import pycdlib as pycdlib_core

from appliance.errors import RemasterError

BOOT_IMAGE = "/boot/isolinux/isolinux.bin"
REQUIRED = ("/boot/vmlinuz64", "/boot/corepure64.gz", BOOT_IMAGE, "/boot/isolinux/isolinux.cfg")
FILE_MODE = 0o100444  # read-only on a CD, as mkisofs -r makes them
DIR_MODE = 0o040555
NAME_MAX = 30  # ISO 9660 levels 2-3: name + extension
JOLIET_MAX = 64
_CLOCK_MODULES = (pycdlib_core, headervd, dates, inplaceeditor, utils)


class _Clock:
    """Stands in for the `time` module inside pycdlib: `time()` is the fixed epoch and
    local time is UTC (pycdlib derives the GMT offset from localtime vs gmtime)."""

    def __init__(self, epoch: int):
        self.epoch = float(epoch)

    def time(self) -> float:
        return self.epoch

    def localtime(self, seconds: float | None = None) -> time.struct_time:
        return time.gmtime(self.epoch if seconds is None else seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@contextlib.contextmanager
def fixed_clock(epoch: int):
    """pycdlib's clock is `epoch` (UTC) inside the block. Process-wide while it lasts: the
    pipeline runs one stage at a time, and the originals come back on any exit."""
    saved = {m: m.time for m in _CLOCK_MODULES}
    try:
        for module in saved:
            module.time = _Clock(epoch)
        yield
    finally:
        for module, original in saved.items():
            module.time = original


def _upper_d(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def iso9660_name(rr_name: str, taken: set[str], is_dir: bool = False) -> str:
    """A level-3 ISO 9660 identifier for `rr_name`, unique among `taken` (uppercase, no
    version), e.g. openssh.tcz.md5.txt -> OPENSSH_TCZ_MD5.TXT."""
    if is_dir:
        stem, ext = _upper_d(rr_name)[:NAME_MAX], ""
    else:
        base, dot, ext = rr_name.rpartition(".")
        stem, ext = (_upper_d(base), _upper_d(ext)[:8]) if dot and base else (_upper_d(rr_name), "")
        stem = stem[: NAME_MAX - len(ext)]
    name = f"{stem}.{ext}" if ext else stem
    n = 1
    while name in taken:
        n += 1
        suffix = f"_{n}"
        short = stem[: (NAME_MAX - len(ext) if not is_dir else NAME_MAX) - len(suffix)] + suffix
        name = f"{short}.{ext}" if ext else short
    return name


def joliet_name(rr_name: str) -> str:
    """Joliet allows 64 characters; a longer name keeps its end (the extension)."""
    return rr_name if len(rr_name) <= JOLIET_MAX else rr_name[: JOLIET_MAX - 12] + rr_name[-12:]


class BaseIso:
    """A Tiny Core ISO opened for changes. Use as a context manager (closes the file)."""

    def __init__(self, path: Path):
        self.path = path
        self.iso = pycdlib.PyCdlib()
        try:
            self.iso.open(str(path))
        except (pycdlibexception.PyCdlibException, OSError, ValueError) as exc:
            raise RemasterError(f"{path}: not a readable ISO 9660 image ({exc})",
                                "check the download (the fetch stage verifies its sha256)") from None
        self.size = path.stat().st_size
        try:
            self._check()
        except BaseException:
            self.iso.close()
            raise
        self.iso.interchange_level = max(self.iso.interchange_level, 4)
        self.joliet = self.iso.has_joliet()

    def __enter__(self) -> BaseIso:
        return self

    def __exit__(self, *exc) -> None:
        self.iso.close()

    # --- checks ---------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.iso.has_rock_ridge():
            raise RemasterError(f"{self.path}: no Rock Ridge names, so not a Tiny Core ISO")
        missing = [p.lstrip("/") for p in REQUIRED if not self.exists(p)]
        if missing:
            raise RemasterError(f"{self.path}: not a Tiny Core ISO: missing {', '.join(missing)}",
                                "the base must be CorePure64 (boot/vmlinuz64, "
                                "boot/corepure64.gz, isolinux)")
        catalog = self.iso.eltorito_boot_catalog
        if catalog is None:
            raise RemasterError(f"{self.path}: no El Torito boot record; the ISO cannot boot")
        boot = self.record(BOOT_IMAGE)
        if catalog.initial_entry.load_rba != boot.extent_location():
            raise RemasterError(f"{self.path}: El Torito does not boot {BOOT_IMAGE.lstrip('/')}")
        self._check_size()

    def _check_size(self) -> None:
        """The image is as long as its volume descriptor says (a truncated download is
        caught here; pycdlib itself clamps what it reads to the file)."""
        declared = self.iso.pvd.space_size * self.iso.pvd.logical_block_size()
        if self.size < declared:
            raise RemasterError(f"{self.path}: {self.size} bytes, but the volume is {declared}: "
                                "the image is truncated or corrupt past the end of the file",
                                "download it again (delete it from cache/downloads/)")

    # --- reading --------------------------------------------------------------------------

    def record(self, rr_path: str):
        return self.iso.get_record(rr_path=rr_path)

    def exists(self, rr_path: str) -> bool:
        try:
            self.record(rr_path)
            return True
        except pycdlibexception.PyCdlibException:
            return False

    def children(self, rr_dir: str) -> list:
        return [r for r in self.iso.list_children(rr_path=rr_dir)
                if not (r.is_dot() or r.is_dotdot())]

    @staticmethod
    def rr_name(rec) -> str:
        return rec.rock_ridge.name().decode("utf-8", "replace")

    def read(self, rr_path: str) -> bytes:
        out = io.BytesIO()
        try:
            self.iso.get_file_from_iso_fp(out, rr_path=rr_path)
        except pycdlibexception.PyCdlibException as exc:
            raise RemasterError(f"{self.path}: cannot read {rr_path.lstrip('/')}: {exc}") from None
        return out.getvalue()

    # --- changing -------------------------------------------------------------------------

    def _iso_dir(self, rr_dir: str) -> str:
        return "/" if rr_dir == "/" else self.iso.full_path_from_dirrecord(self.record(rr_dir))

    def _joliet_dir(self, rr_dir: str) -> str | None:
        if not self.joliet:
            return None
        if rr_dir == "/":
            return "/"
        try:
            self.iso.get_record(joliet_path=rr_dir)
            return rr_dir
        except pycdlibexception.PyCdlibException:
            return None

    def _taken(self, rr_dir: str) -> set[str]:
        names = (r.file_identifier().decode("ascii", "replace") for r in self.children(rr_dir))
        return {n.split(";")[0].rstrip(".").upper() for n in names}

    def _paths(self, rr_path: str, is_dir: bool) -> tuple[str, str, str | None]:
        rr_dir, name = str(PurePosixPath(rr_path).parent), PurePosixPath(rr_path).name
        iso_name = iso9660_name(name, self._taken(rr_dir), is_dir) + ("" if is_dir else ";1")
        jdir = self._joliet_dir(rr_dir)
        joliet = None if jdir is None else str(PurePosixPath(jdir) / joliet_name(name))
        return str(PurePosixPath(self._iso_dir(rr_dir)) / iso_name), name, joliet

    def add_dir(self, rr_path: str) -> None:
        iso_path, name, joliet = self._paths(rr_path, True)
        self.iso.add_directory(iso_path=iso_path, rr_name=name, joliet_path=joliet,
                               file_mode=DIR_MODE)

    def add_file(self, rr_path: str, data: bytes | Path) -> None:
        """A new file (its parent must exist). Path data is read by pycdlib on write."""
        iso_path, name, joliet = self._paths(rr_path, False)
        self._add(iso_path, name, joliet, data)

    def _add(self, iso_path: str, name: str, joliet: str | None, data: bytes | Path) -> None:
        if isinstance(data, Path):
            self.iso.add_file(str(data), iso_path=iso_path, rr_name=name, joliet_path=joliet,
                              file_mode=FILE_MODE)
        else:
            self.iso.add_fp(io.BytesIO(data), len(data), iso_path=iso_path, rr_name=name,
                            joliet_path=joliet, file_mode=FILE_MODE)

    def replace_file(self, rr_path: str, data: bytes) -> None:
        """New contents under the file's original ISO 9660 and Joliet names."""
        iso_path = self.iso.full_path_from_dirrecord(self.record(rr_path))
        joliet = rr_path if self._joliet_dir(rr_path) else None
        self.iso.rm_file(iso_path=iso_path)
        self._add(iso_path, PurePosixPath(rr_path).name, joliet, data)

    def remove_tree(self, rr_path: str) -> None:
        """A directory and everything below it, from every name space."""
        for rec in self.children(rr_path):
            child = str(PurePosixPath(rr_path) / self.rr_name(rec))
            if rec.is_dir():
                self.remove_tree(child)
            else:
                self.iso.rm_file(iso_path=self.iso.full_path_from_dirrecord(rec))
        joliet = self._joliet_dir(rr_path)
        self.iso.rm_directory(iso_path=self._iso_dir(rr_path))
        if joliet:
            self.iso.rm_directory(joliet_path=joliet)

    def write(self, out: Path) -> None:
        """Write the image as `out.part`, then rename: a failure leaves no output behind."""
        part = out.with_name(out.name + ".part")
        try:
            self.iso.write(str(part))
            os.replace(part, out)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
