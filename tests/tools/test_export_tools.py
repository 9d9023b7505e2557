"""The export stage with the real qemu-img, xmllint and sha256sum, through the stage engine
(a stand-in packer stage hands over a qcow2 with data in it)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from appliance.errors import StageError
from appliance.paths import REPO
from appliance.run import Runner
from tests.export_stage import BASE, EPOCH, PINS, harness

pytestmark = pytest.mark.tools

SCHEMA = REPO / "tests" / "data" / "ovf-schema" / "dsp8023_1.1.1.xsd"
VIRTUAL = 64 << 20
MF_LINE = re.compile(r"^(SHA1|SHA256)\(([^)]+)\)= ([0-9a-f]+)$")
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
NS = {"ovf": OVF[1:-1],
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"}


def run(*argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          check=False)


def qemu_info(path: Path, fmt: str) -> dict:
    return json.loads(run("qemu-img", "info", "-f", fmt, "--output=json", path).stdout)


@pytest.fixture
def source(tmp_path) -> Path:
    """A 64 MiB qcow2 holding 4 MiB of text at the start and 1 MiB of a pattern at 32 MiB."""
    raw = tmp_path / "source.raw"
    with open(raw, "wb") as fh:
        fh.write(b"tiny core appliance " * ((4 << 20) // 20))
        fh.seek(32 << 20)
        fh.write(hashlib.sha256(b"seed").digest() * (1 << 15))
        fh.truncate(VIRTUAL)
    disk = tmp_path / "source.qcow2"
    assert run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk).returncode == 0
    raw.unlink()
    return disk


@pytest.fixture
def h(tmp_path, source, monkeypatch):
    return harness(tmp_path, source, Runner(tmp_path / "logs", echo=lambda line: None),
                   monkeypatch)


def unpack(ova: Path, dest: Path) -> list[tarfile.TarInfo]:
    dest.mkdir()
    with tarfile.open(ova) as tar:
        members = tar.getmembers()
        for m in members:
            (dest / m.name).write_bytes(tar.extractfile(m).read())
    return members


@pytest.mark.parametrize("extra, digest, subtype", [
    ("", "SHA256", "PIIX4"),
    ('export = {disk_controller = "sata", manifest_digest = "sha1"}\n', "SHA1",
     "vmware.sata.ahci"),
])
def test_ova_is_valid_and_self_consistent(h, tmp_path, source, extra, digest, subtype):
    assert h.build(extra)["export"].action == "run"
    ova = h.out / f"{BASE}.ova"
    members = unpack(ova, tmp_path / "ova")
    names = [f"{BASE}.ovf", f"{BASE}.mf", f"{BASE}-disk1.vmdk"]
    assert [m.name for m in members] == names
    raw = ova.read_bytes()
    for m in members:
        assert raw[m.offset + 257:m.offset + 265] == b"ustar\x0000"
        assert m.offset_data == m.offset + 512
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root")
        assert (m.mtime, m.mode, m.type) == (EPOCH, 0o644, tarfile.REGTYPE)
    ovf_file, mf_file, vmdk = (tmp_path / "ova" / n for n in names)

    lint = run("xmllint", "--nonet", "--noout", "--schema", SCHEMA, ovf_file)
    assert lint.returncode == 0, lint.stderr

    lines = mf_file.read_text().splitlines()
    assert [MF_LINE.fullmatch(line).group(2) for line in lines] == [names[0], names[2]]
    for line in lines:
        algo, name, hexdigest = MF_LINE.fullmatch(line).groups()
        assert algo == digest
        assert hashlib.new(algo.lower(), (tmp_path / "ova" / name).read_bytes()).hexdigest() \
            == hexdigest

    info = qemu_info(vmdk, "vmdk")
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    root = ET.parse(ovf_file).getroot()
    assert int(root.find("ovf:References/ovf:File", NS).get(f"{OVF}size")) == \
        vmdk.stat().st_size
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    unit = disk.get(f"{OVF}capacityAllocationUnits")
    assert re.fullmatch(r"byte \* 2\^\d+", unit)  # the form Proxmox's OVF reader parses
    scale = 2 ** int(unit.rsplit("^", 1)[1])
    assert int(disk.get(f"{OVF}capacity")) * scale == info["virtual-size"] == VIRTUAL
    assert 0 < int(disk.get(f"{OVF}populatedSize")) <= VIRTUAL
    subtypes = [e.text for e in root.iterfind(".//rasd:ResourceSubType", NS)]
    assert subtype in subtypes
    # the disk in the OVA holds exactly the packer stage's disk
    same = run("qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", vmdk, source)
    assert same.returncode == 0, same.stdout + same.stderr


def test_the_schema_check_catches_a_misordered_item(h, tmp_path):
    h.build()
    members = unpack(h.out / f"{BASE}.ova", tmp_path / "ova")
    text = (tmp_path / "ova" / members[0].name).read_text()
    # swap two elements of the first Item: still well-formed XML, no longer valid OVF
    broken, count = re.subn(r"(<rasd:AllocationUnits>[^<]*</rasd:AllocationUnits>)(\s*)"
                            r"(<rasd:Description>[^<]*</rasd:Description>)", r"\3\2\1", text,
                            count=1)
    assert count == 1
    (tmp_path / "broken.ovf").write_text(broken)
    lint = run("xmllint", "--nonet", "--noout", "--schema", SCHEMA, tmp_path / "broken.ovf")
    assert lint.returncode != 0 and "element AllocationUnits" in lint.stderr


def test_qcow2_is_compressed_clean_and_holds_the_same_disk(h, source):
    h.build()
    qcow2 = h.out / f"{BASE}.qcow2"
    assert run("qemu-img", "check", "-f", "qcow2", qcow2).returncode == 0
    assert qcow2.stat().st_size < source.stat().st_size // 2  # the text compresses
    same = run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qcow2, source)
    assert same.returncode == 0, same.stdout + same.stderr


def test_sha256sums_passes_sha256sum_c_and_manifest_lists_everything(h):
    h.build()
    check = run("sha256sum", "-c", "SHA256SUMS", cwd=h.out)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.split()) == sorted(
        ["manifest.json:", f"{BASE}.ova:", f"{BASE}.qcow2:", "OK", "OK", "OK"])
    m = json.loads((h.out / "manifest.json").read_text())
    assert {i["key"]: i["sha256"] for i in m["inputs"]} == {p.key: p.sha256 for p in PINS}
    assert {o["name"]: o["sha256"] for o in m["outputs"]} == {
        name: hashlib.sha256((h.out / name).read_bytes()).hexdigest()
        for name in (f"{BASE}.qcow2", f"{BASE}.ova")}
    assert m["tools"]["qemu-img"].startswith("qemu-img version")


def test_rerun_is_skipped_and_out_is_untouched(h):
    h.build()
    before = {p.name: p.stat().st_mtime_ns for p in h.out.iterdir()}
    assert h.build()["export"].action == "skip"
    assert {p.name: p.stat().st_mtime_ns for p in h.out.iterdir()} == before


@pytest.mark.parametrize("damage, expect", [
    ("header", "is not a sound qcow2 image"),
    ("refcounts", "is not a sound qcow2 image: 1 corruption(s)"),
])
def test_a_damaged_packer_disk_is_refused_and_out_is_kept(h, damage, expect):
    h.build()
    before = h.out_bytes()
    disk = h.packer_disk()
    with open(disk, "r+b") as fh:  # same size: only the bytes are wrong
        fh.seek(0 if damage == "header" else 65536)
        fh.write(b"garbage!")
    with pytest.raises(StageError) as err:
        h.engine(with_packer=False).execute(h.context(), force={"export"})
    assert str(disk) in str(err.value) and expect in str(err.value)
    assert "--force packer" in err.value.hint
    assert h.out_bytes() == before
    assert not (h.build_root / "export.tmp" / f"{BASE}.qcow2").exists()


def test_two_real_exports_of_one_qcow2_give_the_same_ova(tmp_path, source, monkeypatch):
    """Real qemu-img writes a random CID into each VMDK; the OVA must not change with it."""
    ovas = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        h = harness(tmp_path / name, source, Runner(tmp_path / name / "logs",
                                                   echo=lambda line: None), monkeypatch)
        h.build()
        ovas.append((h.out / f"{BASE}.ova").read_bytes())
    assert ovas[0] == ovas[1]
