"""test-image against real disks that are not appliances: real qemu-img, real QEMU.

A blank qcow2 and an OVA around a blank streamOptimized VMDK boot nothing (the BIOS finds
no boot sector), so each must FAIL clearly within a short --timeout, keep its serial log,
leave no QEMU and no temporary overlay behind, and never change the deliverable.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from appliance import cli
from appliance.paths import REPO

pytestmark = [pytest.mark.tools, pytest.mark.timeout(600)]

SHORT = ["--timeout", "8", "--memory", "128", "--shutdown-timeout", "3"]


def qemu_img(*argv) -> None:
    subprocess.run(["qemu-img", *map(str, argv)], check=True, capture_output=True)


def blank_qcow2(path: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", path, "16M")
    return path


def blank_ova(work: Path, with_disk: bool = True) -> Path:
    """An OVA (.ovf, then the disk) whose disk is a blank streamOptimized VMDK."""
    (work / "blank.ovf").write_text('<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
                                    'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">'
                                    '<References><File ovf:href="blank-disk1.vmdk"/>'
                                    '</References></Envelope>\n')
    members = ["blank.ovf"]
    if with_disk:
        qemu_img("convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized",
                 blank_qcow2(work / "src.qcow2"), work / "blank-disk1.vmdk")
        members.append("blank-disk1.vmdk")
    ova = work / ("blank.ova" if with_disk else "nodisk.ova")
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in members:
            tar.add(work / name, arcname=name)
    return ova


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_processes_under(path: Path) -> list[str]:
    """Command lines of running processes that mention `path` (our QEMUs' overlays)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in text and str(path) in text:
            found.append(text)
    return found


@pytest.fixture
def build(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "build"
    monkeypatch.setenv("APPLIANCE_BUILD", str(root))
    return root


def test_disks_that_boot_nothing_fail_clearly_and_leave_nothing_behind(tmp_path, build,
                                                                        capsys):
    qcow2, ova = blank_qcow2(tmp_path / "blank.qcow2"), blank_ova(tmp_path)
    before = {p: sha256(p) for p in (qcow2, ova)}
    start = time.monotonic()
    assert cli.main(["test-image", str(qcow2), str(ova), *SHORT]) == 1
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line, image in zip(lines, (qcow2, ova), strict=True):
        kept = build / "logs" / "test-image" / f"{image.name}.boot1-serial.log"
        assert line == (f"test-image: FAIL {image}: boot 1: no APPLIANCE-READY within 8 s "
                        "(last serial line: none: nothing booted, or no console=ttyS0); "
                        f"serial log kept at {kept}")
        assert kept.exists()
    assert "extracting blank-disk1.vmdk from blank.ova" in err
    assert "-F vmdk" in err and "boot 2" not in err  # boot 2 needs a ready boot 1
    assert elapsed < 200  # the accelerator probe, then 8 s per image
    assert {p: sha256(p) for p in (qcow2, ova)} == before
    assert not list(build.glob("test-image-*")), "temporary overlay left behind"
    assert qemu_processes_under(build) == []


def test_qemu_that_cannot_start_fails_with_its_own_message(tmp_path, build, capsys):
    qcow2 = blank_qcow2(tmp_path / "blank.qcow2")
    assert cli.main(["test-image", str(qcow2), "--memory", "99999999"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"test-image: FAIL {qcow2}: boot 1: QEMU exited (code 1) before a "
                          "marker: qemu-system-x86_64: cannot set up guest memory"), out
    assert (build / "logs" / "test-image" / "blank.qcow2.boot1-qemu.log").exists()


def test_what_is_no_disk_image_is_an_error_without_traceback(tmp_path, build, capsys):
    text = tmp_path / "notes.qcow2"
    text.write_text("hello\n")
    assert cli.main(["test-image", str(text)]) == 1
    err = capsys.readouterr().err
    assert f"error: {text}: not a qcow2 disk image (qemu-img: " in err
    assert "Traceback" not in err
    assert cli.main(["test-image", str(blank_ova(tmp_path, with_disk=False))]) == 1
    err = capsys.readouterr().err
    assert "nodisk.ova: the OVF names the disk blank-disk1.vmdk, which the OVA does not " \
           "contain" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("sig", "said"), [(signal.SIGINT, "interrupted"),
                                           (signal.SIGTERM, "stopped by SIGTERM")])
def test_ctrl_c_or_sigterm_stops_qemu_and_removes_the_overlay(tmp_path, build, sig, said):
    qcow2 = blank_qcow2(tmp_path / "blank.qcow2")
    env = {**os.environ, "APPLIANCE_BUILD": str(build)}
    proc = subprocess.Popen([sys.executable, "pipeline.py", "test-image", str(qcow2),
                             "--timeout", "300", "--memory", "128"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "waiting for APPLIANCE-READY" in line:
                break
        # Popen returns before QEMU's exec: wait until its command line shows in /proc
        deadline = time.monotonic() + 30
        while not qemu_processes_under(build) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qemu_processes_under(build), "".join(seen)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, "".join(seen) + rest
    assert f"test-image {said}: QEMU stopped, temporary overlay removed" in rest
    assert "Traceback" not in rest
    assert qemu_processes_under(build) == []
    assert not list(build.glob("test-image-*"))


# --- first-boot CDs (--seed, --ovf-env) -----------------------------------------------------

def pipeline(*argv: str, env_build: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPLIANCE_BUILD": str(env_build)}
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), "test-image", *argv],
                          capture_output=True, text=True, env=env, check=False, timeout=120)


def test_seed_without_meta_data_exits_2_with_one_error_line(tmp_path, build):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_text("#cloud-config\n")
    done = pipeline("--seed", str(seed), env_build=build)
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: --seed {seed}: no meta-data in it (a NoCloud seed needs both "
                      "meta-data and user-data)"]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_ovf_env_with_broken_xml_is_a_clear_error(tmp_path, build):
    env = tmp_path / "ovf-env.xml"
    env.write_text('<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1">\n')
    done = pipeline("--ovf-env", str(env), env_build=build)
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --ovf-env {env}: not well-formed "
                                                     "XML")
    assert "Traceback" not in done.stderr


def test_real_qemu_takes_both_cds_on_every_disk_bus(tmp_path, build, capsys):
    """The CD arguments start QEMU on each bus (a clash would exit QEMU before any marker)."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text("instance-id: i-1\n")
    (seed / "user-data").write_text("#cloud-config\n")
    env = tmp_path / "env.xml"
    env.write_text('<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"/>\n')
    qcow2 = blank_qcow2(tmp_path / "blank.qcow2")
    buses = [a for bus in ("ide", "sata", "virtio-blk", "virtio-scsi", "nvme")
             for a in ("--disk-bus", bus)]
    assert cli.main(["test-image", str(qcow2), *buses, "--boots", "1", "--timeout", "4",
                     "--memory", "128", "--shutdown-timeout", "3", "--seed", str(seed),
                     "--ovf-env", str(env)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 5, out
    for line in lines:
        assert "no APPLIANCE-READY within 4 s" in line, line  # QEMU ran; nothing to boot
    assert err.count("ide-cd,drive=cd0,bus=ide.1,unit=0") == 5
    assert err.count("ide-cd,drive=cd1,bus=ide.1,unit=1") == 5
    assert qemu_processes_under(build) == []
