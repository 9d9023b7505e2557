"""The stand-in kernel boots under QEMU and behaves like tc11's where the appliance depends on it.

Builds the kernel on first use (minutes, then cached: see tests/standin/kernel.py), boots it
with a busybox initramfs made here, and judges by the marker line the guest prints.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from appliance.run import Runner
from appliance.vm.qemu import accel_option
from tests.standin import cpio
from tests.standin.kernel import build_kernel, log_dir
from tests.standin.kernel_options import load_options
from tests.standin.kernelconfig import parse_config, symbol_6_1, tc11_value_6_1, value_of

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

BUSYBOX = "/usr/bin/busybox"
BOOT_TIMEOUT_S = 300
MARKER = re.compile(r"^STANDIN-KERNEL-OK (\S+)$")

# /init: every check prints STANDIN-KERNEL-FAIL <why> and powers off at once, so a failure is
# read from the console rather than waited out.
INIT = r"""#!/bin/sh
export PATH=/bin
fail() { echo "STANDIN-KERNEL-FAIL $*"; poweroff -f; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys || fail "mount proc/sys"
release=$(uname -r)
echo "RELEASE $release"
grep -qw overlay /proc/filesystems && fail "overlay is built in"
modprobe overlay 2>/dev/null && fail "an overlay module loaded"
grep -qw devtmpfs /proc/filesystems && fail "devtmpfs is built in"
grep -qw memory /proc/cgroups && fail "the memory cgroup exists"
[ -e /proc/config.gz ] && fail "/proc/config.gz exists (IKCONFIG)"
for m in $(cat /modules.txt); do
    modprobe "$m" || fail "modprobe $m"
    grep -q "^$m " /proc/modules || fail "$m not in /proc/modules"
done
ip link add openfaas0 type bridge || fail "cannot add a bridge"
# busybox ip ignores "peer name X": the kernel names the peer veth0, so ours is not veth0.
ip link add vethcni type veth || fail "cannot add a veth pair"
ip link set vethcni master openfaas0 || fail "cannot add the veth to the bridge"
echo "STANDIN-KERNEL-OK $release"
poweroff -f
"""


@pytest.fixture(scope="module")
def kernel():
    return build_kernel()


@pytest.fixture(scope="module")
def module_names():
    return sorted({o.module for o in load_options().options if o.module and o.tc11 == "m"})


def make_initramfs(kernel, modules: list[str], path: Path) -> Path:
    """busybox + /init + the kernel's whole module tree (with its modules.dep)."""
    entries = [
        cpio.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.file("init", INIT.encode(), 0o755),
        cpio.file("modules.txt", "\n".join(modules).encode() + b"\n"),
        cpio.directory("proc"),
        cpio.directory("sys"),
        cpio.char_device("dev/console", 5, 1),
        cpio.char_device("dev/null", 1, 3, 0o666),
        *cpio.tree(kernel.moddir, f"lib/modules/{kernel.release}"),
    ]
    # The applets /init calls, as busybox --install would make them.
    for applet in ("mount", "uname", "grep", "modprobe", "cat", "ip", "poweroff", "echo"):
        entries.append(cpio.symlink(f"bin/{applet}", "busybox"))
    path.write_bytes(cpio.gzip_newc(entries))
    return path


def boot(kernel, initrd: Path):
    argv = [
        "qemu-system-x86_64", "-accel", accel_option("tcg"), "-m", "512", "-nographic", "-no-reboot",
        "-kernel", kernel.bzimage, "-initrd", initrd, "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    runner = Runner(log_dir(), echo=lambda line: None)
    return runner.run(argv, log="standin-kernel-vm", timeout=BOOT_TIMEOUT_S, check=False)


def test_cached_config_has_every_tc11_value(kernel):
    config = parse_config(kernel.config.read_text(encoding="utf-8"))
    wrong = [
        f"{symbol_6_1(o)}={value_of(config, symbol_6_1(o))} (tc11: {o.tc11})"
        for o in load_options().options
        if value_of(config, symbol_6_1(o)) != tc11_value_6_1(o)
    ]
    assert wrong == []
    assert value_of(config, "OVERLAY_FS") == value_of(config, "MEMCG") == "n"


def test_modules_tc11_ships_are_modules_here(kernel, module_names):
    built = {p.name.removesuffix(".ko") for p in kernel.moddir.rglob("*.ko")}
    assert set(module_names) <= built
    assert "overlay" not in built
    assert (kernel.moddir / "modules.dep").is_file()


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86")
def test_boots_loads_modules_and_powers_off(kernel, module_names, tmp_path):
    initrd = make_initramfs(kernel, module_names, tmp_path / "initrd.gz")
    result = boot(kernel, initrd)
    lines = [line.strip() for line in result.output.splitlines()]
    tail = "\n".join(lines[-40:])
    failures = [line for line in lines if line.startswith("STANDIN-KERNEL-FAIL")]
    assert failures == [], tail
    markers = [m.group(1) for line in lines if (m := MARKER.match(line))]
    assert markers == [kernel.release], f"no marker line; console tail:\n{tail}"
    assert kernel.release.endswith("-tinycore64")
    # 0 = QEMU left by itself after the guest's ACPI power-off; a timeout would be negative.
    assert result.returncode == 0, f"QEMU did not power off by itself:\n{tail}"
