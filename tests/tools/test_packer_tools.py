"""`packer validate` (the installed Packer, 1.6.6 on Debian 12) accepts what the stage renders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ToolError
from appliance.paths import REPO
from appliance.run import Runner
from appliance.stages.packer import stage as packer_build
from appliance.stages.packer import template as packer_template

pytestmark = pytest.mark.tools


@pytest.fixture
def rendered(tmp_path) -> tuple[Path, dict]:
    recipe = config.load([REPO / "tests" / "standin" / "recipe.toml"]).recipe
    iso = tmp_path / "appliance.iso"
    iso.write_bytes(b"\0" * 2048)
    key = tmp_path / "build_ed25519"
    Runner(echo=lambda line: None).run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                                        str(key)])
    work = tmp_path / "work"
    work.mkdir()
    build = packer_template.Build(iso=iso, iso_sha256="0" * 64, accelerator="tcg",
                                  private_key=key, extensions=("openssh.tcz",), work=work,
                                  serial_log=tmp_path / "serial.log")
    return work, packer_template.values(recipe, build)


def validate(work: Path) -> None:
    Runner(echo=lambda line: None).run(packer_build.validate_argv(work), cwd=work,
                                       env=packer_build.packer_env(work.parent))


def test_packer_validate_accepts_the_rendered_template(rendered):
    work, values = rendered
    packer_template.render(REPO / "packer", work, values, packer_build.packer_version())
    validate(work)


def test_packer_validate_catches_a_bad_value(rendered):
    work, values = rendered
    values["accelerator"] = "warp-drive"
    packer_template.render(REPO / "packer", work, values, packer_build.packer_version())
    with pytest.raises(ToolError, match="accelerator"):
        validate(work)


SCRIPTS = sorted((REPO / "packer" / "scripts").glob("*.sh"))


def test_the_guest_scripts_pass_shellcheck_for_posix_sh():
    assert [p.name for p in SCRIPTS] == ["cleanup.sh", "install-to-disk.sh", "verify.sh"]
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, SCRIPTS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def run_verify(mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_MODE": mode,
           "APPLIANCE_BOOT_LOG": str(tmp_path / "boot.log")}
    return subprocess.run(["busybox", "sh", str(REPO / "packer" / "scripts" / "verify.sh")],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="verify.sh refuses to run as a user")
def test_verify_prints_one_fail_line_and_exits_1_when_root_is_not_the_install(tmp_path):
    root = subprocess.run(["awk", '$2 == "/" { t = $3 } END { print t }', "/proc/mounts"],
                          capture_output=True, text=True).stdout.strip()
    assert root != "tmpfs"  # this host's / is not what a frugal install boots into
    (tmp_path / "boot.log").write_text("bootlocal: APPLIANCE-READY\n")
    result = run_verify("frugal", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        f"APPLIANCE-VERIFY: FAIL / is {root}, not what a frugal install boots into")
    assert "verify: boot log: bootlocal: APPLIANCE-READY" in result.stdout  # context shown
    assert "PASS" not in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="verify.sh refuses to run as a user")
def test_verify_refuses_an_unknown_mode(tmp_path):
    result = run_verify("scatter", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "APPLIANCE-VERIFY: FAIL APPLIANCE_MODE=scatter: expected traditional or frugal")


def test_the_kept_packer_files_validate_after_the_stage_rename(rendered):
    """The engine renames build/packer.tmp/ to build/packer/; a user debugging with
    `packer validate`/`packer build` in the kept folder must not hit the removed .tmp path."""
    work, values = rendered
    packer_template.render(REPO / "packer", work, values, packer_build.packer_version())
    kept = work.with_name("packer")
    work.rename(kept)
    assert str(work) not in "".join(p.read_text() for p in kept.glob("*.hcl"))
    validate(kept)


@pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")
def test_verify_does_not_expect_an_extension_without_files_to_be_mounted(tmp_path):
    """tce-load unmounts an empty (meta) extension such as original-modules-KERNEL
    (tinycorelinux/Core-scripts usr/bin/tce-load @ 0ed6e60): verify.sh must tell one apart."""
    empty, full = tmp_path / "empty", tmp_path / "full"
    (empty / "lib").mkdir(parents=True)
    (full / "usr/local/bin").mkdir(parents=True)
    (full / "usr/local/bin/x").write_text("x\n")
    for tree in (empty, full):
        subprocess.run(["mksquashfs", tree, f"{tree}.tcz", "-noappend", "-quiet"], check=True,
                       capture_output=True)
    # verify.sh's functions without its main, then the one under test
    body = (REPO / "packer/scripts/verify.sh").read_text().replace('\nmain "$@"\n', "\n")
    script = tmp_path / "probe.sh"
    script.write_text(body + 'for t in "$@"; do tcz_has_files "$t" && echo files || echo none; '
                      'done\n')
    result = subprocess.run(["busybox", "sh", str(script), f"{empty}.tcz", f"{full}.tcz"],
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.split() == ["none", "files"], result.stdout + result.stderr
    assert not Path("/tmp/verify-probe").exists()  # unmounted and removed
