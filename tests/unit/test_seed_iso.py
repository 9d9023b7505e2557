"""test-image --seed / --ovf-env: the CD layouts (read back with pycdlib), bad input, the
QEMU CD arguments on every disk bus, and the CDs reaching every boot."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from appliance import cli
from appliance.errors import UsageError
from appliance.vm import boot_check, seed_iso
from appliance.vm import image_boot as ti
from appliance.vm.boot_check import BootResult, BootSpec, qemu_argv

META = b"instance-id: copy-1\nlocal-hostname: box1\n"
USER = b"#cloud-config\nhostname: box1\nssh_authorized_keys:\n  - ssh-ed25519 AAAA k\n"
NETWORK = b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
ENV = (b'<?xml version="1.0"?>\n<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"'
       b' xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"><PropertySection>'
       b'<Property oe:key="hostname" oe:value="box1"/></PropertySection></Environment>\n')


def seed_dir(tmp_path: Path, network: bool = True) -> Path:
    folder = tmp_path / "seed"
    folder.mkdir()
    (folder / "meta-data").write_bytes(META)
    (folder / "user-data").write_bytes(USER)
    if network:
        (folder / "network-config").write_bytes(NETWORK)
    return folder


def read_back(iso_path: Path) -> tuple[str, str, dict[str, bytes], dict[str, bytes]]:
    """(ISO 9660 label, Joliet label, files by Rock Ridge name, files by Joliet name)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        label = iso.pvd.volume_identifier.decode().rstrip()
        joliet_label = iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip()
        by_rr, by_joliet = {}, {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            by_rr[name] = out.getvalue()
        for child in iso.list_children(joliet_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.file_identifier().decode("utf-16-be")
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            by_joliet[name] = out.getvalue()
        assert iso.has_rock_ridge()
    finally:
        iso.close()
    return label, joliet_label, by_rr, by_joliet


# --- layouts ------------------------------------------------------------------------------

def test_the_nocloud_seed_reads_back_with_label_cidata_and_the_exact_files(tmp_path):
    iso = seed_iso.write_iso(seed_iso.nocloud_layout(seed_dir(tmp_path)), tmp_path / "s.iso")
    label, joliet_label, by_rr, by_joliet = read_back(iso)
    assert (label, joliet_label) == ("cidata", "cidata")
    expected = {"meta-data": META, "user-data": USER, "network-config": NETWORK}
    assert by_rr == expected  # lowercase names with dashes, for Linux (Rock Ridge)
    assert by_joliet == expected  # and for readers that take Joliet


def test_network_config_is_optional(tmp_path):
    layout = seed_iso.nocloud_layout(seed_dir(tmp_path, network=False))
    assert [n for n, _ in layout.files] == ["meta-data", "user-data"]


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    layout = seed_iso.nocloud_layout(seed_dir(tmp_path))
    a = seed_iso.write_iso(layout, tmp_path / "a.iso").read_bytes()
    assert seed_iso.write_iso(layout, tmp_path / "b.iso").read_bytes() == a


@pytest.mark.parametrize(("remove", "says"), [
    (["meta-data"], "no meta-data in it"),
    (["user-data"], "no user-data in it"),
    (["meta-data", "user-data"], "no meta-data and no user-data in it"),
])
def test_a_seed_without_a_required_file_is_a_usage_error(tmp_path, remove, says):
    folder = seed_dir(tmp_path)
    for name in remove:
        (folder / name).unlink()
    with pytest.raises(UsageError) as err:
        seed_iso.nocloud_layout(folder)
    assert err.value.message.startswith(f"--seed {folder}: {says}")


def test_a_seed_that_is_no_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        seed_iso.nocloud_layout(tmp_path / "missing")


def test_the_ovf_environment_cd_holds_ovf_env_xml(tmp_path):
    (tmp_path / "env.xml").write_bytes(ENV)
    iso = seed_iso.write_iso(seed_iso.ovf_env_layout(tmp_path / "env.xml"), tmp_path / "o.iso")
    label, _joliet, by_rr, _ = read_back(iso)
    assert label == "OVF ENV"  # the label vSphere gives its ISO transport CD
    assert by_rr == {"ovf-env.xml": ENV}


@pytest.mark.parametrize("text", [b"<Environment>", b"not xml at all", b""])
def test_an_ovf_env_that_is_not_xml_is_a_usage_error(tmp_path, text):
    (tmp_path / "env.xml").write_bytes(text)
    with pytest.raises(UsageError, match="not well-formed XML"):
        seed_iso.ovf_env_layout(tmp_path / "env.xml")


# --- QEMU arguments -----------------------------------------------------------------------

def boot_spec(tmp_path: Path, bus: str, cdroms: tuple[Path, ...]) -> BootSpec:
    return BootSpec(tmp_path / "o.qcow2", "tcg", 2048, 1, tmp_path / "s.log",
                    tmp_path / "q.sock", 40000, bus, "e1000", cdroms)


@pytest.mark.parametrize("bus", boot_check.DISK_BUSES)
def test_the_cds_sit_on_the_secondary_ide_channel_on_every_disk_bus(tmp_path, bus):
    seed, env = tmp_path / "seed.iso", tmp_path / "env.iso"
    argv = qemu_argv(boot_spec(tmp_path, bus, (seed, env)))
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert f"file={seed},if=none,id=cd0,media=cdrom,format=raw,readonly=on" in drives
    assert f"file={env},if=none,id=cd1,media=cdrom,format=raw,readonly=on" in drives
    assert "ide-cd,drive=cd0,bus=ide.1,unit=0" in devices
    assert "ide-cd,drive=cd1,bus=ide.1,unit=1" in devices
    disk = [d for d in drives if "o.qcow2" in d]
    assert len(disk) == 1 and "index=" not in disk[0]  # an IDE disk stays ide.0 master
    assert not any("ide.1" in d for d in devices if "cd" not in d)


def test_without_cds_the_command_line_is_unchanged(tmp_path):
    argv = qemu_argv(boot_spec(tmp_path, "ide", ()))
    assert "media=cdrom" not in " ".join(argv) and "ide-cd" not in " ".join(argv)


def test_more_cds_than_units_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at most 2"):
        boot_check.cdrom_argv((tmp_path / "a", tmp_path / "b", tmp_path / "c"))


# --- the command line and every boot --------------------------------------------------------

def test_cli_builds_the_cds_into_build_and_passes_them_on(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    (tmp_path / "env.xml").write_bytes(ENV)
    seen = []
    monkeypatch.setattr(ti, "run", lambda images, options: seen.append(options) or 0)
    assert cli.main(["test-image", "--matrix", "--boots", "1", "--seed",
                     str(seed_dir(tmp_path)), "--ovf-env", str(tmp_path / "env.xml")]) == 0
    cds = seen[-1].cdroms
    assert [p.name for p in cds] == ["seed.iso", "env-ovf-env.iso"]
    assert all(p.parent == tmp_path / "build" / "test-image" and p.is_file() for p in cds)
    assert len(seen[-1].variants) == 15


def test_cli_with_a_bad_seed_exits_2_before_any_boot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(ti, "run", lambda images, options: pytest.fail("booted"))
    folder = seed_dir(tmp_path)
    (folder / "meta-data").unlink()
    assert cli.main(["test-image", "--seed", str(folder)]) == 2
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: --seed {folder}: no meta-data in it (a NoCloud seed needs both meta-data "
        "and user-data)"]
    assert "Traceback" not in err and not (tmp_path / "build" / "test-image").exists()


class FakeBoot:
    specs: list[BootSpec] = []

    def __init__(self, runner, spec, label, say, warn):
        self.spec = spec

    def run(self, timeout_s, shutdown_timeout_s) -> BootResult:
        FakeBoot.specs.append(self.spec)
        return BootResult(1.0)


def test_every_boot_of_every_variant_gets_the_cds(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(ti, "Boot", FakeBoot)
    monkeypatch.setattr(ti, "make_overlay", lambda target, work, runner: work / "o.qcow2")
    FakeBoot.specs = []
    cds = (tmp_path / "seed.iso",)
    options = ti.Options(variants=ti.variants(["ide", "nvme"], [], False), boots=2, cdroms=cds)
    verdicts = ti.check_target(ti.Target(tmp_path / "a.qcow2", "qcow2"), options,
                               ti.Accel("tcg", "test"))
    assert all(v.passed for v in verdicts) and len(verdicts) == 2
    assert [(s.disk_bus, s.cdroms) for s in FakeBoot.specs] == [
        ("ide", cds), ("ide", cds), ("nvme", cds), ("nvme", cds)]


def test_the_cd_file_name_never_carries_a_comma_into_qemus_drive_option():
    assert ti.safe_name("site,a b", "nocloud") == "site_a_b"
    assert ti.safe_name("..", "nocloud") == "nocloud"
