"""The kernel stage through its own code path: the real `pipeline.py lock` and
`pipeline.py build --until kernel` against the stand-in mirror, building overlay.ko from the
served source tarball and config (Debian's linux-source-6.1 configured like tc11)."""

from __future__ import annotations

import gzip
import json
import subprocess

import pytest

from tests import kernel_stage

pytestmark = [pytest.mark.tools, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    return kernel_stage.cold_build(tmp_path_factory.mktemp("kernel-stage"))


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)


def test_lock_pins_the_served_kernel_source_and_config(cold):
    assert cold.lock.returncode == 0, cold.lock.stderr
    pins = {p["key"]: p for p in json.loads((cold.run.root / "standin.lock").read_text())["pins"]}
    assert pins["kernel/source"]["name"] == f"linux-{cold.run.kver.split('-')[0]}-patched.txz"
    assert pins["kernel/config"]["name"] == f"config-{cold.run.kver}"


def test_overlay_module_is_built_for_the_standin_kernel(cold, tmp_path):
    assert cold.result.returncode == 0, cold.result.stderr[-3000:]
    assert "kernel: building (no previous build)" in cold.result.stderr
    # the served tree carries tc11's old libsubcmd, which GCC >= 12 rejects: gcc-11 builds it
    assert "kernel: compiler: gcc-11: the tree's objtool (pre-fix libsubcmd xrealloc)" in \
        cold.result.stderr
    assert "CC=gcc-11 HOSTCC=gcc-11" in (cold.run.build / "logs" / "kernel.log").read_text()
    kver, out = cold.run.kver, cold.run.kernel
    listing = json.loads((out / "modules.json").read_text())
    inside = f"usr/local/lib/modules/{kver}/kernel/fs/overlayfs/overlay.ko"
    name = f"overlay-{kver}.tcz"
    assert listing["extensions"] == [{
        "name": name, "kernel_name": "overlay-KERNEL.tcz", "modules": ["overlay"],
        "files": [inside], "deps": [], "replaces": None}]
    assert listing["kernel_check"]["required_missing"] == []
    files = run("unsquashfs", "-l", out / name)
    assert files.returncode == 0, files.stderr
    assert f"squashfs-root/{inside}" in files.stdout.splitlines()
    assert (out / f"{name}.list").read_text() == inside + "\n"
    check = subprocess.run(["md5sum", "-c", f"{name}.md5.txt"], cwd=out, capture_output=True,
                           text=True)  # as tce-load -w checks it
    assert check.returncode == 0, check.stdout
    assert run("unsquashfs", "-d", tmp_path / "x", out / name).returncode == 0
    vermagic = run("modinfo", "-F", "vermagic", tmp_path / "x" / inside).stdout.strip()
    assert vermagic.split()[0] == kver, vermagic
    # the same vermagic as the modules the stand-in kernel itself was built with
    reference = next(cold.run.built.kernel.moddir.rglob("veth.ko"))
    assert vermagic == run("modinfo", "-F", "vermagic", reference).stdout.strip()


def test_the_built_config_passes_kernel_check(cold):
    kver = cold.run.kver
    checked = cold.run.pipeline("kernel-check", str(cold.run.kernel / f"config-{kver}"))
    assert checked.returncode == 0, checked.stdout
    assert "OVERLAY_FS" in checked.stdout and "result: every required option is met" in \
        checked.stdout


def test_a_second_build_is_skipped(cold):
    again = cold.run.pipeline("build", "--until", "kernel", "--locked")
    assert again.returncode == 0, again.stderr
    assert "kernel: up to date, skipped" in again.stderr
    stamp = json.loads((cold.run.kernel / "stamp.json").read_text())
    print(f"\nkernel stage: cold build {cold.seconds:.1f} s (stage {stamp['seconds']:.1f} s), "
          "warm run: skipped")
    plan = cold.run.pipeline("plan")
    assert "kernel: up to date" in plan.stdout, plan.stdout


def test_a_tree_of_another_release_fails_clearly_and_builds_nothing(cold, tmp_path):
    """The ISO's kernel says 6.1.999: the served source/config build 6.1.N, so no module."""
    other = tmp_path / "other.toml"
    other.write_text('[tinycore]\nkernel = "6.1.999-tinycore64"\nextensions = []\n')
    run_ = kernel_stage.stage_run(tmp_path / "other",
                                  *kernel_stage.extra_overlay(tmp_path, False), str(other))
    assert run_.pipeline("lock", "--accept-first-use").returncode == 0
    failed = run_.pipeline("build", "--until", "kernel", "--locked")
    assert failed.returncode == 1
    assert (f"builds release '{cold.run.kver}', but the recipe's tinycore.kernel is "
            "'6.1.999-tinycore64': the source/config do not match the ISO's kernel"
            ) in failed.stderr
    assert not run_.kernel.exists()  # no stamp, no outputs: never half-built


# --- kernel.rebuild = "full" -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    built = kernel_stage.cold_build(tmp_path_factory.mktemp("kernel-full"), full=True)
    assert built.result.returncode == 0, built.result.stderr[-3000:]
    return built


def test_full_rebuild_meets_every_required_and_recommended_option(full):
    kver = full.run.kver
    listing = json.loads((full.run.kernel / "modules.json").read_text())
    assert listing["kernel_check"] == {"required_missing": [], "recommended_missing": []}
    checked = full.run.pipeline("kernel-check", str(full.run.kernel / f"config-{kver}"))
    assert checked.returncode == 0, checked.stdout
    for level in ("REQUIRED", "RECOMMENDED"):
        line = next(x for x in checked.stdout.splitlines() if x.startswith(level))
        met, total = line.split("(")[1].split()[0].split("/")
        assert met == total, line
    for option in ("MEMCG", "CFS_BANDWIDTH", "CGROUP_BPF"):
        assert f"ok    {option}" in checked.stdout
    data = (full.run.kernel / "vmlinuz64").read_bytes()
    assert data[0x202:0x206] == b"HdrS" and kver.encode() in data[:0x8000]  # a bzImage of kver
    print(f"\nkernel stage, full rebuild: cold {full.seconds:.1f} s")


def test_full_rebuild_replaces_the_fetched_module_extensions(full, tmp_path):
    kver = full.run.kver
    listing = json.loads((full.run.kernel / "modules.json").read_text())
    assert listing["kernel"] == {"vmlinuz64": "vmlinuz64", "modules": f"modules-{kver}.tgz"}
    by_name = {e["name"]: e for e in listing["extensions"]}
    fetched = full.run.built.mirror / "11.x/x86_64/tcz"
    for name in (f"ipv6-netfilter-{kver}.tcz", f"net-bridging-{kver}.tcz"):
        assert by_name[name]["replaces"] == f"tcz/{name}"
        # the same files as the extension it stands in for, each rebuilt
        assert (full.run.kernel / f"{name}.list").read_text() == \
            (fetched / f"{name}.list").read_text()
        assert (full.run.kernel / name).read_bytes() != (fetched / name).read_bytes()
    assert by_name[f"overlay-{kver}.tcz"]["replaces"] is None
    bridge = f"usr/local/lib/modules/{kver}/kernel/net/bridge/bridge.ko.gz"
    for which, tcz in (("new", full.run.kernel), ("old", fetched)):
        name = f"net-bridging-{kver}.tcz"
        assert run("unsquashfs", "-d", tmp_path / which, tcz / name, bridge).returncode == 0
    # rewritten gzipped, as tc11 ships them; MEMCG changes struct layouts: not the same
    new, old = (gzip.decompress((tmp_path / d / bridge).read_bytes()) for d in ("new", "old"))
    assert new != old
    (tmp_path / "bridge.ko").write_bytes(new)
    assert run("modinfo", "-F", "vermagic", tmp_path / "bridge.ko").stdout.split()[0] == kver
    tree = run("tar", "-tzf", full.run.kernel / f"modules-{kver}.tgz").stdout.splitlines()
    for module in ("kernel/drivers/block/loop.ko", "kernel/fs/squashfs/squashfs.ko",
                   "kernel/fs/overlayfs/overlay.ko", "modules.dep"):
        assert f"lib/modules/{kver}/{module}" in tree
