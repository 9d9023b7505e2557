"""`plan` changes nothing, `clean` deletes only what the pipeline made, `doctor` says what it
could not verify and reuses the cached accelerator verdict unless told to reprobe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance import cli, doctor, paths, tools
from appliance.vm import qemu

MINIMAL = '[tinycore]\nmirrors = ["http://127.0.0.1:9/"]\nguest_mirror = "http://10.0.2.2:9/"\n'


@pytest.fixture
def where(tmp_path, monkeypatch):
    for name in ("BUILD", "CACHE", "OUT"):
        monkeypatch.setenv(f"APPLIANCE_{name}", str(tmp_path / name.lower()))
    (tmp_path / "appliance.toml").write_text(MINIMAL)
    return tmp_path


def recording_tools(tmp_path: Path, monkeypatch, *names: str) -> Path:
    """Doubles on PATH that append their name and CHECKPOINT_DISABLE to calls.log."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in names:
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} CHECKPOINT_DISABLE=$CHECKPOINT_DISABLE" '
                        f'>> {calls}\necho "{name} v1.6.6"\n')
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tools.tool_version.cache_clear()
    return calls


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_plan_changes_nothing_and_echoes_no_command(where, monkeypatch, capsys):
    calls = recording_tools(where, monkeypatch, "packer", "ssh-keygen")
    before = tree(where)
    assert cli.main(["plan", "-c", str(where / "appliance.toml")]) == 0
    out, _err = capsys.readouterr()
    assert "fetch: would run" in out
    assert not [line for line in out.splitlines() if line.startswith("+ ")]
    assert tree(where) - before == {"calls.log"}  # no build/, cache/, key or lock written
    recorded = calls.read_text().splitlines()
    assert not [c for c in recorded if c.startswith("ssh-keygen")]
    assert "packer CHECKPOINT_DISABLE=1" in recorded  # never a call home for a version


# --- clean -------------------------------------------------------------------------------


def test_clean_removes_what_the_pipeline_made(where, capsys):
    for name in ("build", "out", "cache"):
        paths.claim(where / name)
        (where / name / "file").write_text("x")
    assert cli.main(["clean"]) == 0
    assert not (where / "build").exists() and not (where / "out").exists()
    assert (where / "cache" / "file").exists()  # kept without --cache
    assert cli.main(["clean", "--cache"]) == 0
    err = capsys.readouterr().err
    assert not (where / "cache").exists()
    assert "build SSH key (keys/build_ed25519" in err and f"removed {where / 'cache'}" in err


def test_clean_refuses_a_folder_it_did_not_make(where, monkeypatch, capsys):
    images = where / "images"  # APPLIANCE_OUT=~/images: the user's own folder
    images.mkdir()
    (images / "holiday.qcow2").write_text("precious")
    monkeypatch.setenv("APPLIANCE_OUT", str(images))
    paths.claim(where / "build")
    assert cli.main(["clean"]) == 1
    err = capsys.readouterr().err
    assert f"error: refusing to delete {images}: the pipeline did not make it" in err
    assert (images / "holiday.qcow2").exists()
    assert (where / "build").exists()  # nothing at all is deleted when one is refused


def test_claim_marks_only_a_folder_it_creates(tmp_path):
    fresh, existing = tmp_path / "fresh" / "out", tmp_path / "existing"
    existing.mkdir()
    paths.claim(fresh)
    paths.claim(existing)
    assert paths.made_by_pipeline(fresh) and not paths.made_by_pipeline(existing)


# --- doctor and the accelerator verdict --------------------------------------------------


@pytest.fixture
def probes(where, monkeypatch):
    """Count real probes; KVM runs the boot sector, and whether a kernel exists is set."""
    seen = []

    def probe(_runner, kernel=None):
        seen.append(kernel)
        return qemu.Accel("kvm", "probed", verified=kernel is not None)

    monkeypatch.setattr(qemu, "probe_accelerator", probe)
    monkeypatch.setattr(qemu, "find_probe_kernel", lambda: None)
    monkeypatch.setattr(qemu, "_reprobe", False)
    qemu.accelerator.cache_clear()
    yield seen
    qemu.accelerator.cache_clear()


def test_kvm_without_a_kernel_boot_is_unverified(probes):
    check = doctor.check_accel()
    assert check.name == "accelerator" and check.detail.startswith("kvm: unverified")
    assert not check.ok and not check.required  # a warning: a build may still hang


def test_the_verdict_is_cached_on_disk_and_reprobe_ignores_it(probes, where):
    assert qemu.accelerator().name == "kvm"
    qemu.accelerator.cache_clear()  # a new process
    again = qemu.accelerator()
    assert len(probes) == 1 and again.cached
    assert Path(again.cached).parent == where / "cache" / "accel"
    qemu.reprobe()
    qemu.accelerator()
    assert len(probes) == 2


@pytest.mark.parametrize("change", ["host_kernel", "qemu", "kvm"])
def test_the_verdict_is_keyed_by_kernel_qemu_and_dev_kvm(probes, monkeypatch, change):
    qemu.accelerator()
    qemu.accelerator.cache_clear()
    if change == "host_kernel":
        real = os.uname()
        monkeypatch.setattr(qemu.os, "uname", lambda: os.uname_result(
            (*real[:2], real.release + "-new", *real[3:])))
    elif change == "qemu":
        monkeypatch.setattr(qemu, "tool_version", lambda argv: "QEMU emulator version 99")
    else:
        monkeypatch.setattr(qemu, "kvm_identity", lambda: [1, 2, 3, 4])
    qemu.accelerator()
    assert len(probes) == 2


def test_a_damaged_verdict_file_is_probed_again(probes, where):
    qemu.accelerator()
    for path in (where / "cache" / "accel").glob("*.json"):
        path.write_text("{not json")
    qemu.accelerator.cache_clear()
    assert qemu.accelerator().cached is None and len(probes) == 2


def test_doctor_checks_the_kernel_stage_tools_only_when_it_builds(where, monkeypatch):
    from appliance import config

    monkeypatch.setattr(doctor, "LIBELF_HEADERS", (where / "gelf.h",))
    monkeypatch.setattr(doctor.shutil, "which", lambda tool: None if tool == "bison" else tool)
    monkeypatch.setattr(doctor, "tool_version", lambda argv: "1.0")
    idle = config.load([where / "appliance.toml"]).recipe
    assert doctor.check_kernel_tools(idle) == []
    builds = where / "modules.toml"
    builds.write_text(MINIMAL + '[kernel]\nmodules = ["overlay"]\n'
                      'config = "release/src/kernel/config"\nsource = "release/src/linux.txz"\n')
    checks = {c.name: c for c in doctor.check_kernel_tools(config.load([builds]).recipe)}
    assert set(checks) == {"make", "gcc", "bc", "bison", "flex", "libelf"}
    assert not checks["bison"].ok and "apt-get install bison" in checks["bison"].detail
    assert not checks["libelf"].ok and "libelf-dev" in checks["libelf"].detail
    assert checks["gcc"].ok and checks["gcc"].required


def test_doctor_writes_nothing_but_the_verdict(probes, where, capsys):
    before = tree(where)
    cli.main(["doctor", "-c", str(where / "appliance.toml")])
    assert {p for p in tree(where) - before if not p.startswith("cache")} == set()
    assert json.loads(next((where / "cache" / "accel").glob("*.json")).read_text())["name"] == "kvm"
