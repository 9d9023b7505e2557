"""The export stage through the stage engine with a recording fake qemu-img: recipe fields,
manifest.json, rebuild reasons, and the failures that must leave out/ untouched."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ConfigError, StageError
from appliance.fetch import sha256_file
from appliance.paths import MARKER
from appliance.vm import qemu_img
from tests.export_stage import BASE, BUILD_JSON, PINS, harness
from tests.fakes import FakeRunner, fake_vmdk

VIRTUAL = 64 << 20


@dataclass
class FakeQemuImg:
    """Answers like qemu-img: convert copies bytes, info/check print JSON."""

    output_check_rc: int = 0  # what check says about the converted qcow2
    create_type: str = "streamOptimized"

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        verb, path = argv[1], argv[-1]
        if verb == "convert":
            fmt = argv[argv.index("-O") + 1]
            data = fmt.encode() + Path(argv[-2]).read_bytes()
            # qemu-img writes a random CID (%x: 1 to 8 digits) into a VMDK's descriptor
            cid = f"{int.from_bytes(os.urandom(4), 'big'):x}"
            Path(path).write_bytes(fake_vmdk(cid, data) if fmt == "vmdk" else data)
            return 0, ""
        if verb == "check":
            rc = self.output_check_rc if "export.tmp" in path else 0
            corrupt = 1 if rc == 2 else 0
            return rc, json.dumps({"corruptions": corrupt, "allocated-clusters": 3}, indent=4)
        fmt = argv[argv.index("-f") + 1]
        data = {"create-type": self.create_type} if fmt == "vmdk" else {}
        return 0, json.dumps({"virtual-size": VIRTUAL, "format": fmt, "cluster-size": 65536,
                              "actual-size": 1000, "format-specific": {"data": data}}, indent=4)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "source.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(5000))
    return path


def make(tmp_path, disk, monkeypatch, qemu: FakeQemuImg | None = None):
    return harness(tmp_path, disk, FakeRunner(qemu or FakeQemuImg()), monkeypatch)


def test_recipe_fields_and_their_errors(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[tinycore]\nmirrors = ["http://x/"]\nguest_mirror = "http://y/"\n')
    export = config.load([path]).recipe.export
    assert (export.formats, export.disk_controller, export.manifest_digest) == (
        ["qcow2", "ova"], "ide", "sha256")
    path.write_text(path.read_text() + '[export]\ndisk_controller = "scsi"\n'
                    'manifest_digest = "sha512"\n')
    with pytest.raises(ConfigError) as err:
        config.load([path])
    shown = "\n".join(err.value.problems)
    assert "export.disk_controller: Input should be 'ide' or 'sata'" in shown
    assert "export.manifest_digest: Input should be 'sha256' or 'sha1'" in shown


def test_stage_publishes_deliverables_manifest_and_sums(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    decisions = h.build()
    assert decisions["export"].action == "run"
    assert {p.name for p in h.out.iterdir()} == {
        "SHA256SUMS", f"{BASE}.ova", f"{BASE}.qcow2", "manifest.json", MARKER}
    export_dir = h.build_root / "export"
    stamp = json.loads((export_dir / "stamp.json").read_text())
    assert set(stamp["outputs"]) == {"qcow2", "ova", "ovf", "mf", "manifest.json", "SHA256SUMS",
                                     "out/qcow2", "out/ova", "out/manifest.json",
                                     "out/SHA256SUMS"}
    assert not list(export_dir.glob("ova/*.vmdk"))  # one copy of the disk: inside the OVA
    sums = (h.out / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == [
        "manifest.json", f"{BASE}.ova", f"{BASE}.qcow2"]
    for line in sums:
        digest, name = line.split("  ")
        assert sha256_file(h.out / name) == digest


def test_two_exports_of_one_qcow2_give_the_same_ova_bytes(tmp_path, disk, monkeypatch):
    """qemu-img (here its double) writes a random CID; the stage derives it from the disk."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = make(tmp_path / "one", disk, monkeypatch)
    first.build()
    second = make(tmp_path / "two", disk, monkeypatch)
    second.build()
    one, two = (h.out / f"{BASE}.ova" for h in (first, second))
    assert one.read_bytes() == two.read_bytes()


def test_the_vmdk_cid_is_derived_from_its_content(tmp_path):
    a, b, c = (tmp_path / f"{n}.vmdk" for n in "abc")
    a.write_bytes(fake_vmdk("12345678", b"data"))
    b.write_bytes(fake_vmdk("9abc", b"data"))  # qemu-img's %x: fewer digits
    c.write_bytes(fake_vmdk("12345678", b"other data"))
    for path in (a, b, c):
        qemu_img.fix_cid(path)
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes()) == len(fake_vmdk("12345678", b"data"))  # patched in place
    cid = qemu_img.CID_LINE.search(a.read_bytes())[1]
    assert len(cid) == 8 and cid != b"12345678"
    assert qemu_img.CID_LINE.search(c.read_bytes())[1] != cid  # other content, other CID
    (tmp_path / "d.vmdk").write_bytes(b"not a vmdk")
    with pytest.raises(ValueError, match="no KDMV magic"):
        qemu_img.fix_cid(tmp_path / "d.vmdk")


def test_manifest_json_lists_inputs_outputs_tools_and_timings(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    m = json.loads((h.out / "manifest.json").read_text())
    assert m["inputs"] == [{"key": p.key, "name": p.name, "version": p.version, "url": p.url,
                            "sha256": p.sha256} for p in sorted(PINS, key=lambda p: p.key)]
    assert [o["name"] for o in m["outputs"]] == [f"{BASE}.qcow2", f"{BASE}.ova"]
    for o in m["outputs"]:
        assert (o["size"], o["sha256"]) == ((h.out / o["name"]).stat().st_size,
                                            sha256_file(h.out / o["name"]))
    assert re.fullmatch(r"[0-9a-f]{64}", m["recipe_sha256"])
    assert m["accelerator"] == "tcg" and m["tools"]["packer"] == "1.6.6"
    assert set(m["tools"]) >= {"qemu-img", "qemu-system-x86_64", "mksquashfs", "packer"}
    assert set(m["python_packages"]) == {"pycdlib", "jinja2", "requests", "python-hcl2",
                                         "pydantic"}
    assert "missing" not in m["python_packages"].values()
    packer_seconds = json.loads((h.build_root / "packer" / "stamp.json").read_text())["seconds"]
    assert m["timings"]["stages"] == {"packer": packer_seconds}
    assert m["timings"]["packer_phases"] == BUILD_JSON["phases"]
    assert m["source_date_epoch"] == 1_700_000_000


def test_qcow2_only_and_what_a_rebuild_says(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    again = h.build()
    assert (again["packer"].action, again["export"].action) == ("skip", "skip")
    changed = h.build('export = {formats = ["qcow2"], disk_controller = "sata"}\n')
    assert changed["packer"].action == "skip"
    assert "recipe export.disk_controller changed" in changed["export"].reasons
    assert "recipe export.formats changed" in changed["export"].reasons
    sums = (h.out / "SHA256SUMS").read_text()
    assert f"{BASE}.ova" not in sums and f"{BASE}.qcow2" in sums


def test_source_date_epoch_from_the_environment_reruns_export(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    assert "recipe source_date_epoch changed" in h.build()["export"].reasons
    assert json.loads((h.out / "manifest.json").read_text())["source_date_epoch"] == 1600000000


def test_deleted_deliverable_is_published_again(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    (h.out / f"{BASE}.ova").unlink()
    assert "output out/ova missing or changed" in h.build()["export"].reasons
    assert (h.out / f"{BASE}.ova").exists()


def failing_rebuild(h, expect: str, **kwargs) -> StageError:
    """A forced export that must fail and leave out/ byte for byte as it was."""
    before = h.out_bytes()
    with pytest.raises(StageError) as err:
        h.engine(**kwargs).execute(h.context(), force={"export"})
    assert expect in str(err.value)
    assert h.out_bytes() == before
    assert not list(h.out.glob("*.part"))
    return err.value


def test_missing_packer_disk_is_a_clear_error(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    h.packer_disk().unlink()
    err = failing_rebuild(h, f"{h.packer_disk()} is missing", with_packer=False)
    assert "--force packer" in err.hint


def test_unreadable_build_json_is_a_clear_error(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    (h.build_root / "packer" / "build.json").write_text("{not json")
    failing_rebuild(h, "build.json", with_packer=False)


def test_converted_qcow2_that_fails_check_is_an_error_naming_it(tmp_path, disk, monkeypatch):
    qemu = FakeQemuImg()
    h = make(tmp_path, disk, monkeypatch, qemu)
    h.build()
    qemu.output_check_rc = 2
    err = failing_rebuild(h, f"{BASE}.qcow2 fails qemu-img check: 1 corruption(s)")
    assert "--force export" in err.hint


def test_vmdk_that_is_not_stream_optimized_is_an_error(tmp_path, disk, monkeypatch):
    qemu = FakeQemuImg()
    h = make(tmp_path, disk, monkeypatch, qemu)
    h.build()
    qemu.create_type = "monolithicSparse"
    failing_rebuild(h, "not streamOptimized")


def test_a_format_dropped_from_the_recipe_leaves_out(tmp_path, disk, monkeypatch):
    h = make(tmp_path, disk, monkeypatch)
    h.build()
    (h.out / "notes.txt").write_text("mine\n")  # never published by the pipeline: kept
    h.build('export = {formats = ["qcow2"]}\n')
    assert sorted(p.name for p in h.out.iterdir()) == sorted(
        [f"{BASE}.qcow2", "manifest.json", "SHA256SUMS", "notes.txt", MARKER])
    h.build('export = {formats = ["ova"]}\n')
    assert sorted(p.name for p in h.out.iterdir()) == sorted(
        [f"{BASE}.ova", MARKER, "manifest.json", "SHA256SUMS", "notes.txt"])


@pytest.mark.parametrize("name", ["manifest.json", "SHA256SUMS"])
def test_a_full_disk_at_manifest_or_sums_leaves_out_as_it_was(tmp_path, disk, monkeypatch,
                                                              name):
    import errno
    import os

    from appliance import files

    h = make(tmp_path, disk, monkeypatch)
    h.build()
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if "w" in mode and f".{name}." in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full, raising=False)
    err = failing_rebuild(h, f"{name}: cannot write: No space left on device")
    assert "Traceback" not in str(err)
