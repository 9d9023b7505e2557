"""First-boot CDs for `test-image --seed DIR` and `--ovf-env FILE`, built with pycdlib.

A NoCloud seed is what cloud-localds, `virt-install --cloud-init` and Proxmox's cloud-init
drive attach: an ISO 9660 volume labelled `cidata` whose root holds `meta-data` and
`user-data` (both required) and optionally `network-config` (canonical/cloud-init
doc/rtd/topics/datasources/nocloud.rst). An OVF environment CD is what VMware attaches for
the ISO transport: `ovf-env.xml` in the root (DMTF DSP0243 section 11.1), volume label
`OVF ENV` as vSphere writes it.

The names are lowercase with dashes, which plain ISO 9660 cannot hold: the CD carries Rock
Ridge (what Linux reads first) and Joliet names, and an uppercase ISO 9660 name for readers
without either. The layout is a pure function of the input, checked before anything is
written; the same input gives the same bytes (the clock is fixed while pycdlib works).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pycdlib
from pycdlib import pycdlibexception

from appliance.errors import PipelineError, UsageError
from appliance.tinycore.iso_image import fixed_clock, iso9660_name

NOCLOUD_LABEL = "cidata"
NOCLOUD_REQUIRED = ("meta-data", "user-data")
NOCLOUD_OPTIONAL = ("network-config",)
OVF_ENV_LABEL = "OVF ENV"
OVF_ENV_NAME = "ovf-env.xml"
EPOCH = 1704067200  # fixed timestamps: a seed ISO is test input, its bytes should not drift


@dataclass(frozen=True)
class IsoLayout:
    """What goes on the CD: its volume label and (Rock Ridge name, bytes) at the root."""

    label: str
    files: tuple[tuple[str, bytes], ...]


def read_input(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None


def nocloud_layout(folder: Path) -> IsoLayout:
    """The NoCloud seed for the files of `folder` (meta-data and user-data required)."""
    if not folder.is_dir():
        raise UsageError(f"--seed {folder}: not a folder",
                         "give a folder holding meta-data and user-data (and optionally "
                         "network-config)")
    missing = [n for n in NOCLOUD_REQUIRED if not (folder / n).is_file()]
    if missing:
        raise UsageError(f"--seed {folder}: no {' and no '.join(missing)} in it (a NoCloud "
                         f"seed needs both {' and '.join(NOCLOUD_REQUIRED)})",
                         "create them, e.g. meta-data with `instance-id: copy-1` and "
                         "user-data starting with `#cloud-config`")
    names = [*NOCLOUD_REQUIRED, *(n for n in NOCLOUD_OPTIONAL if (folder / n).is_file())]
    return IsoLayout(NOCLOUD_LABEL, tuple((n, read_input(folder / n, "--seed")) for n in names))


def ovf_env_layout(path: Path) -> IsoLayout:
    """The OVF environment CD for `path`, which must be well-formed XML."""
    if not path.is_file():
        raise UsageError(f"--ovf-env {path}: no such file",
                         "give an ovf-env.xml (an <Environment> with a PropertySection)")
    data = read_input(path, "--ovf-env")
    try:
        ET.fromstring(data)
    except ET.ParseError as exc:
        raise UsageError(f"--ovf-env {path}: not well-formed XML ({exc})",
                         "fix the file; it goes on the CD as ovf-env.xml") from None
    return IsoLayout(OVF_ENV_LABEL, ((OVF_ENV_NAME, data),))


def write_iso(layout: IsoLayout, out: Path) -> Path:
    """Write `layout` as an ISO 9660 + Rock Ridge + Joliet image to `out`."""
    iso = pycdlib.PyCdlib()
    taken: set[str] = set()
    try:
        with fixed_clock(EPOCH):
            iso.new(interchange_level=3, vol_ident=layout.label, joliet=3, rock_ridge="1.09")
            for name, data in layout.files:
                plain = iso9660_name(name, taken)
                taken.add(plain)
                iso.add_fp(io.BytesIO(data), len(data), f"/{plain};1", rr_name=name,
                           joliet_path=f"/{name}")
            tmp = out.with_name(out.name + ".tmp")
            iso.write(str(tmp))
        tmp.replace(out)
    except pycdlibexception.PyCdlibException as exc:
        raise PipelineError(f"{out}: pycdlib could not build the CD: {exc}") from None
    except OSError as exc:
        raise PipelineError(f"{out}: cannot write: {exc.strerror or exc}") from None
    finally:
        iso.close()
    return out
