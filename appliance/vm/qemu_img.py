"""qemu-img for the export stage: argv builders, and what `info`/`check` report, as data.

Every command names the source format (`-f`): letting qemu-img probe would let a damaged
qcow2 be read as a raw disk and exported without complaint.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import StageError
from appliance.run import Runner

LOG = "export"
# qemu-img check exit codes (qemu-img(1)): 2 = corruptions, 3 = only leaked clusters.
CHECK_CORRUPT, CHECK_LEAKS = 2, 3
# The VMDK descriptor's ddb.adapterType per OVF controller. VMDK has no "sata" value, and
# VMware's own SATA disks say lsilogic; an IDE disk must say ide (lsilogic would make an
# importer attach it to a SCSI controller the OVF does not have).
VMDK_ADAPTER = {"ide": "ide", "sata": "lsilogic"}


@dataclass(frozen=True)
class DiskInfo:
    path: Path
    format: str
    virtual_size: int  # bytes the guest sees
    actual_size: int  # bytes allocated on the host
    cluster_size: int | None
    create_type: str | None  # VMDK only: "streamOptimized", "monolithicSparse", ...


@dataclass(frozen=True)
class CheckReport:
    returncode: int
    corruptions: int
    leaks: int
    allocated_clusters: int | None
    output: str

    @property
    def clean(self) -> bool:
        return self.returncode == 0

    def problem(self) -> str:
        """One line saying what qemu-img check found, for an error message."""
        if self.corruptions or self.leaks:
            return f"{self.corruptions} corruption(s), {self.leaks} leaked cluster(s)"
        lines = [ln for ln in self.output.splitlines() if ln.startswith("qemu-img:")]
        return lines[-1] if lines else f"qemu-img check exited with {self.returncode}"


def info_argv(path: Path, fmt: str) -> list[str]:
    return ["qemu-img", "info", "-f", fmt, "--output=json", str(path)]


def check_argv(path: Path, fmt: str) -> list[str]:
    return ["qemu-img", "check", "-f", fmt, "--output=json", str(path)]


def convert_qcow2_argv(src: Path, dst: Path) -> list[str]:
    """Compressed qcow2: zlib clusters, still bootable and writable (rewrites decompress)."""
    return ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-c", str(src), str(dst)]


def convert_vmdk_argv(src: Path, dst: Path, controller: str) -> list[str]:
    """streamOptimized: the only VMDK flavour OVF importers take (compressed, sequential)."""
    options = f"subformat=streamOptimized,adapter_type={VMDK_ADAPTER[controller]}"
    return ["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o", options,
            str(src), str(dst)]


def json_block(text: str) -> dict | None:
    """The JSON object in qemu-img's output (the runner merges stderr messages into it)."""
    match = re.search(r"^\{$.*?^\}$", text, re.MULTILINE | re.DOTALL)
    if not match:
        return None
    try:
        return json.loads(match.group(0))
    except ValueError:
        return None


def parse_info(text: str, path: Path) -> DiskInfo:
    data = json_block(text)
    if data is None or "virtual-size" not in data:
        raise StageError(f"{path}: qemu-img info printed no usable JSON",
                         f"run `qemu-img info {path}` by hand to see why")
    specific = data.get("format-specific", {}).get("data", {})
    return DiskInfo(path, data.get("format", ""), int(data["virtual-size"]),
                    int(data.get("actual-size", 0)), data.get("cluster-size"),
                    specific.get("create-type"))


def parse_check(returncode: int, text: str) -> CheckReport:
    data = json_block(text) or {}
    return CheckReport(returncode, int(data.get("corruptions", 0)),
                       int(data.get("leaks", 0)), data.get("allocated-clusters"), text)


def info(runner: Runner, path: Path, fmt: str) -> DiskInfo:
    return parse_info(runner.run(info_argv(path, fmt), log=LOG).output, path)


def check(runner: Runner, path: Path, fmt: str = "qcow2") -> CheckReport:
    # check=False: a non-zero exit is a finding to report with the file's name, not a crash
    result = runner.run(check_argv(path, fmt), log=LOG, check=False)
    return parse_check(result.returncode, result.output)


CID_LINE = re.compile(rb"^CID=([0-9a-f]{1,8})$", re.M)  # qemu-img writes it with %x
SECTOR = 512


def descriptor_area(header: bytes) -> tuple[int, int]:
    """(offset, length) in bytes of a sparse VMDK's embedded descriptor (VMware's Virtual
    Disk Format 1.1: magic KDMV, then descriptorOffset and descriptorSize in sectors at 28)."""
    if header[:4] != b"KDMV":
        raise ValueError("not a sparse VMDK (no KDMV magic)")
    offset, size = struct.unpack_from("<QQ", header, 28)
    return offset * SECTOR, size * SECTOR


def with_cid(descriptor: bytes, cid: bytes, area: int) -> bytes:
    """The descriptor area with its CID replaced, NUL-padded to the area's length."""
    text = descriptor.split(b"\0", 1)[0]
    if not CID_LINE.search(text):
        raise ValueError("no CID line in the VMDK descriptor")
    new = CID_LINE.sub(b"CID=" + cid, text, count=1)
    if len(new) >= area:
        raise ValueError("the VMDK descriptor has no room for its CID")
    return new + bytes(area - len(new))


def fix_cid(path: Path) -> None:
    """Replace the random CID qemu-img writes with one derived from the VMDK's content.

    The CID only links a child disk to its parent; a random one makes two conversions of the
    same qcow2 differ, and with them the OVA and its checksums."""
    with open(path, "r+b") as fh:
        header = fh.read(SECTOR)
        try:
            offset, area = descriptor_area(header)
            fh.seek(offset)
            masked = with_cid(fh.read(area), b"0", area)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        # every byte of the file, with the descriptor's CID masked
        digest = hashlib.sha256()
        fh.seek(0)
        digest.update(fh.read(offset))
        digest.update(masked)
        fh.seek(offset + area)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        fh.seek(offset)
        fh.write(with_cid(masked, digest.hexdigest()[:8].encode(), area))
