"""test-image: argv builders, OVA disk selection, markers, verdicts, default images."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from appliance import cli
from appliance.errors import PipelineError
from appliance.vm import boot_check
from appliance.vm import image_boot as ti
from appliance.vm.boot_check import BootResult, BootSpec, Marker, find_marker, qemu_argv
from appliance.vm.timeline import Phase
from tests.fakes import FakeRunner

OVF = """<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="appliance-1.0-disk1.vmdk" ovf:id="file1"/>
  </References>
</Envelope>
"""


def spec(tmp_path: Path, accel: str = "tcg") -> BootSpec:
    return BootSpec(tmp_path / "overlay.qcow2", accel, 2048, 1, tmp_path / "serial.log",
                    Path("/tmp/ti-x/qmp1.sock"), 43210)


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# --- argv builders ------------------------------------------------------------------------

def test_qemu_argv_is_the_ovf_hardware_with_serial_file_qmp_and_gateway_forward(tmp_path):
    argv = qemu_argv(spec(tmp_path))
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["tcg,tb-size=64"]  # TCG's translation cache: 64 MiB
    assert option(argv, "-machine") == ["pc"]
    assert option(argv, "-smp") == ["1"]
    assert option(argv, "-m") == ["2048"]
    assert option(argv, "-display") == ["none"]
    assert option(argv, "-drive") == [f"file={tmp_path}/overlay.qcow2,if=ide,format=qcow2"]
    assert option(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:43210-:8080"]
    assert option(argv, "-device") == ["e1000,netdev=net0"]
    assert option(argv, "-serial") == [f"file:{tmp_path}/serial.log"]
    assert option(argv, "-qmp") == ["unix:/tmp/ti-x/qmp1.sock,server=on,wait=off"]
    assert "-no-reboot" not in argv  # the second boot follows a power-off, not a reboot


def test_qemu_argv_takes_the_accelerator(tmp_path):
    assert option(qemu_argv(spec(tmp_path, "kvm")), "-accel") == ["kvm"]


@pytest.mark.parametrize("bus, devices", [
    ("sata", ["ahci,id=ahci0", "ide-hd,drive=disk0,bus=ahci0.0"]),
    ("virtio-blk", ["virtio-blk-pci,drive=disk0"]),
    ("virtio-scsi", ["virtio-scsi-pci,id=scsi0", "scsi-hd,drive=disk0,bus=scsi0.0"]),
    ("nvme", ["nvme,drive=disk0,serial=tc-appliance"]),
])
def test_each_disk_bus_attaches_the_overlay_through_its_controller(tmp_path, bus, devices):
    argv = qemu_argv(BootSpec(tmp_path / "o.qcow2", "tcg", 2048, 1, tmp_path / "s.log",
                              Path("/tmp/q.sock"), 43210, disk_bus=bus, nic="virtio"))
    assert option(argv, "-drive") == [f"file={tmp_path}/o.qcow2,if=none,id=disk0,format=qcow2"]
    assert option(argv, "-device") == [*devices, "virtio-net-pci,netdev=net0"]


@pytest.mark.parametrize("nic, device", [("e1000", "e1000"), ("virtio", "virtio-net-pci"),
                                         ("vmxnet3", "vmxnet3")])
def test_each_nic_is_on_user_networking_with_the_gateway_forward(nic, device):
    assert boot_check.nic_argv(nic, 5555) == [
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:5555-:8080",
        "-device", f"{device},netdev=net0"]


def test_an_unknown_bus_or_nic_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown disk bus 'scsi'"):
        boot_check.disk_argv("scsi", tmp_path)
    with pytest.raises(ValueError, match="unknown NIC 'rtl8139'"):
        boot_check.nic_argv("rtl8139", 1)


def test_variants_pair_every_bus_with_every_nic():
    assert ti.variants([], [], False) == ti.DEFAULT_VARIANTS == (ti.Variant("ide", "e1000"),)
    assert ti.variants(["virtio-blk", "nvme"], ["virtio"], False) == (
        ti.Variant("virtio-blk", "virtio"), ti.Variant("nvme", "virtio"))
    assert ti.variants(["sata", "sata"], [], False) == (ti.Variant("sata", "e1000"),)
    matrix = ti.variants(["ide"], [], True)
    assert len(matrix) == 15 and len(set(matrix)) == 15
    assert {v.disk_bus for v in matrix} == set(boot_check.DISK_BUSES)
    assert {v.nic for v in matrix} == set(boot_check.NICS)


def test_a_variant_is_named_in_its_verdict_line():
    verdict = ti.Verdict(Path("a.qcow2"), (BootResult(30), BootResult(28)),
                         variant=ti.Variant("nvme", "vmxnet3"))
    assert verdict.line() == "test-image: PASS a.qcow2 [nvme+vmxnet3] (boot 1: 30.0 s, boot 2: 28.0 s)"


def test_cli_test_image_takes_buses_nics_and_matrix(monkeypatch):
    seen = []
    monkeypatch.setattr(ti, "run", lambda images, options: seen.append(options) or 0)
    assert cli.main(["test-image", "--disk-bus", "virtio-blk", "--nic", "virtio",
                     "--nic", "vmxnet3"]) == 0
    assert seen[-1].variants == (ti.Variant("virtio-blk", "virtio"),
                                 ti.Variant("virtio-blk", "vmxnet3"))
    assert seen[-1].boots == 2  # the second boot is where installs break
    assert cli.main(["test-image", "--matrix", "--boots", "1"]) == 0
    assert len(seen[-1].variants) == 15 and seen[-1].boots == 1
    assert cli.main(["test-image", "--boots", "0"]) == 2  # a usage error, not a failure


def test_overlay_argv_names_the_backing_format_and_an_absolute_backing_path(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ti.overlay_argv(Path("out/a.vmdk"), "vmdk", tmp_path / "overlay.qcow2")
    assert argv == ["qemu-img", "create", "-f", "qcow2", "-F", "vmdk",
                    "-b", str(tmp_path / "out/a.vmdk"), str(tmp_path / "overlay.qcow2")]


def test_free_port_is_a_port():
    assert 0 < boot_check.free_port() < 65536


# --- markers ------------------------------------------------------------------------------

@pytest.mark.parametrize("serial, marker", [
    ("Booting...\r\nAPPLIANCE-READY\r\n", Marker("ready")),
    ("x\nAPPLIANCE-NOT-READY faasd\n", Marker("not-ready", "faasd")),
    ("APPLIANCE-NOT-READY   containerd  \n", Marker("not-ready", "containerd")),
    ("APPLIANCE-NOT-READY\n", Marker("not-ready", None)),
    ("APPLIANCE-LIVE\n", Marker("live")),
    ("APPLIANCE-NOT-READY containerd\nAPPLIANCE-READY\n", Marker("not-ready", "containerd")),
])
def test_find_marker(serial, marker):
    assert find_marker(serial) == marker


@pytest.mark.parametrize("serial", [
    "", "[    1.2] Linux version 6.1\nbox login:", "APPLIANCE-READYX\n",
    "echo APPLIANCE-READY\n", "APPLIANCE-VERIFY: PASS\n", "APPLIANCE-READY now\n",
])
def test_no_marker(serial):
    assert find_marker(serial) is None


def test_marker_problems():
    assert Marker("ready").problem() is None
    assert "service faasd" in Marker("not-ready", "faasd").problem()
    assert "APPLIANCE-LIVE" in Marker("live").problem()


# --- verdicts -----------------------------------------------------------------------------

def test_pass_line_gives_both_boot_times():
    verdict = ti.Verdict(Path("out/a.qcow2"), (BootResult(41.2), BootResult(37.9)))
    assert verdict.passed
    assert verdict.line() == "test-image: PASS out/a.qcow2 (boot 1: 41.2 s, boot 2: 37.9 s)"


def test_pass_line_says_when_qemu_had_to_be_stopped():
    verdict = ti.Verdict(Path("a.ova"), (BootResult(5, None, True), BootResult(6)))
    assert verdict.line().endswith("(boot 1: 5.0 s, boot 2: 6.0 s; 1 ACPI power-off(s) ignored, "
                                   "QEMU stopped)")


def test_each_boot_gets_a_timeline_line_after_the_verdict():
    ready = (Phase("kernel", 1.9), Phase("cgroups", 13.0), Phase("ready", 38.0))
    twice = ready + (Phase("cgroups", 39.0),)
    verdict = ti.Verdict(Path("a.qcow2"), (BootResult(41.2, phases=ready),
                                           BootResult(30.0, phases=twice), BootResult(9.0)))
    assert verdict.timeline_lines() == [
        "test-image: boot 1 timeline: kernel 1.9 | cgroups 13.0 (+11.1) | ready 38.0 (+25.0)",
        "test-image: boot 2 timeline: kernel 1.9 | cgroups 13.0 (+11.1) | ready 38.0 (+25.0)"
        " | cgroups 39.0 (+1.0) (timeline problems: phase 'cgroups' printed more than once)"]
    # a boot that printed no phase (nothing booted) adds nothing to its FAIL line


def test_fail_line_names_the_reason_and_the_kept_serial_log():
    verdict = ti.Verdict(Path("a.qcow2"), (BootResult(9, "x"),), "boot 1: no APPLIANCE-READY",
                         Path("build/logs/test-image/a.qcow2.boot1-serial.log"))
    assert not verdict.passed
    assert verdict.line() == ("test-image: FAIL a.qcow2: boot 1: no APPLIANCE-READY; serial "
                              "log kept at build/logs/test-image/a.qcow2.boot1-serial.log")


# --- images -------------------------------------------------------------------------------

def write_manifest(out, *names):
    outputs = [{"name": n, "size": 0, "sha256": "0" * 64} for n in names]
    (out / "manifest.json").write_text(json.dumps({"format": 1, "outputs": outputs}))


def test_default_images_are_what_the_manifest_lists_qcow2_first(tmp_path):
    for name in ("b.qcow2", "a.ova", "a.qcow2", "a.vmdk", "old-0.9.qcow2", "SHA256SUMS"):
        (tmp_path / name).write_bytes(b"")
    write_manifest(tmp_path, "a.ova", "b.qcow2", "a.qcow2")
    # old-0.9.qcow2 is not the last export's: never booted in its place
    assert ti.default_images(tmp_path) == [tmp_path / "a.qcow2", tmp_path / "b.qcow2",
                                           tmp_path / "a.ova"]


@pytest.mark.parametrize(("manifest", "expect"), [
    ("{", "unreadable"), ('{"outputs": 3}', "unreadable"),
    ('{"outputs": [{"name": "x.ova"}]}', "lists x.ova, which is not in"),
    ('{"outputs": []}', "lists no .qcow2 or .ova")])
def test_a_bad_manifest_is_an_error_naming_it(tmp_path, manifest, expect):
    (tmp_path / "stale.qcow2").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(PipelineError, match=expect):
        ti.default_images(tmp_path)


@pytest.mark.parametrize("exists", [True, False])
def test_no_default_image_says_make_image(tmp_path, exists):
    out = tmp_path / "out"
    if exists:
        out.mkdir()
    with pytest.raises(PipelineError) as err:
        ti.default_images(out)
    assert "no image in" in err.value.message and "make image" in err.value.hint


def test_image_kind():
    assert ti.image_kind(Path("a.QCOW2")) == "qcow2"
    assert ti.image_kind(Path("a.vmdk")) == "vmdk"
    assert ti.image_kind(Path("a.ova")) == "ova"
    with pytest.raises(PipelineError, match="not a .qcow2, .vmdk or .ova"):
        ti.image_kind(Path("a.img"))


def test_prepare_refuses_a_missing_image(tmp_path):
    with pytest.raises(PipelineError, match="no such image"):
        ti.prepare([tmp_path / "gone.qcow2"], FakeRunner())


def test_check_format_names_the_format_and_reports_qemu_img(tmp_path):
    image = tmp_path / "a.qcow2"
    runner = FakeRunner(lambda argv: (1, "qemu-img: Could not open 'a.qcow2': Image is not "
                                         "in qcow2 format"))
    with pytest.raises(PipelineError) as err:
        ti.check_format(runner, image, "qcow2")
    assert runner.calls == [["qemu-img", "info", "-f", "qcow2", "--output=json", str(image)]]
    assert err.value.message == (f"{image}: not a qcow2 disk image (qemu-img: Could not open "
                                 "'a.qcow2': Image is not in qcow2 format)")


def test_check_format_accepts_what_qemu_img_reads(tmp_path):
    ti.check_format(FakeRunner(lambda argv: (0, '{\n"format": "vmdk"\n}')),
                    tmp_path / "a.vmdk", "vmdk")


# --- OVA ----------------------------------------------------------------------------------

def test_ovf_file_refs_reads_namespaced_hrefs():
    assert ti.ovf_file_refs(OVF) == ["appliance-1.0-disk1.vmdk"]
    assert ti.ovf_file_refs("not xml <") == []


def test_ova_disk_member_is_the_disk_the_ovf_names():
    names = ["a.ovf", "a.mf", "other.vmdk", "appliance-1.0-disk1.vmdk"]
    assert ti.ova_disk_member(names, OVF, Path("a.ova")) == "appliance-1.0-disk1.vmdk"


def test_ova_disk_member_without_ovf_refs_is_the_first_vmdk():
    names = ["a.ovf", "a.mf", "disk1.VMDK", "disk2.vmdk"]
    assert ti.ova_disk_member(names, "<Envelope/>", Path("a.ova")) == "disk1.VMDK"
    assert ti.ova_disk_member(names, None, Path("a.ova")) == "disk1.VMDK"


def test_ova_without_a_vmdk_is_refused():
    with pytest.raises(PipelineError, match=r"a.ova: no .vmdk disk in this OVA \(members: "
                                            r"a.ovf, a.mf\)"):
        ti.ova_disk_member(["a.ovf", "a.mf"], None, Path("a.ova"))


def test_ova_whose_ovf_names_a_missing_disk_is_refused():
    with pytest.raises(PipelineError, match="names the disk appliance-1.0-disk1.vmdk"):
        ti.ova_disk_member(["a.ovf", "other.vmdk"], OVF, Path("a.ova"))


def make_ova(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_ova_member_reads_the_ovf_inside(tmp_path):
    ova = make_ova(tmp_path / "a.ova", {"a.ovf": OVF.encode(), "a.mf": b"",
                                        "x.vmdk": b"1", "appliance-1.0-disk1.vmdk": b"2"})
    assert ti.ova_member(ova) == "appliance-1.0-disk1.vmdk"


def test_ova_member_refuses_what_is_no_tar(tmp_path):
    ova = tmp_path / "a.ova"
    ova.write_bytes(b"\x00" * 10 + b"not a tar" * 100)
    with pytest.raises(PipelineError, match="not an OVA"):
        ti.ova_member(ova)


def test_extract_member_writes_under_the_base_name_only(tmp_path):
    ova = make_ova(tmp_path / "a.ova", {"a.ovf": b"", "../up/disk.vmdk": b"disk bytes"})
    dest = tmp_path / "work"
    dest.mkdir()
    out = ti.extract_member(ova, "../up/disk.vmdk", dest)
    assert out == dest / "disk.vmdk" and out.read_bytes() == b"disk bytes"
    assert not (tmp_path / "up").exists()


# --- command line -------------------------------------------------------------------------

def test_cli_test_image_options():
    args = cli.parser().parse_args(["test-image", "a.qcow2", "b.ova", "--memory", "1024",
                                    "--timeout", "60", "--shutdown-timeout", "5"])
    assert args.image == [Path("a.qcow2"), Path("b.ova")]
    assert (args.memory, args.timeout, args.shutdown_timeout) == (1024, 60, 5)
    defaults = cli.parser().parse_args(["test-image"])
    assert defaults.image == [] and defaults.memory == ti.DEFAULT_MEMORY_MB
    assert defaults.timeout is None


def test_cli_test_image_without_images_says_make_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APPLIANCE_OUT", str(tmp_path / "out"))
    assert cli.main(["test-image"]) == 1
    err = capsys.readouterr().err
    assert "no image in" in err and "make image" in err and "Traceback" not in err


def test_cli_test_image_refuses_a_tiny_memory(capsys):
    assert cli.main(["test-image", "--memory", "8"]) == 2  # usage: a bad flag value
    assert "--memory" in capsys.readouterr().err
