"""kernel.rebuild = "full" on the stand-in: the rebuilt vmlinuz64 boots, has the memory cgroup
and CPU quota tc11 lacks, and the rebuilt modules (the whole tree the stage outputs for the
base initramfs, which also holds the rebuilt extensions' modules) load into it.

The kernel comes from the real `pipeline.py build --until kernel` (tests/kernel_stage.py,
shared with the tools test); it boots with a busybox initramfs made here, and the guest
reports a marker line. The remaster stage's swap of the ISO's kernel is not tested here.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from appliance.run import Runner
from appliance.vm.qemu import accel_option
from tests import kernel_stage
from tests.standin import cpio

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

BUSYBOX = "/usr/bin/busybox"
BOOT_TIMEOUT_S = 300
APPLETS = ("mount", "grep", "mkdir", "cat", "modprobe", "ip", "poweroff", "uname")

# Every check prints KERNEL-FULL-FAIL <why> and powers off at once.
INIT = r"""#!/bin/sh
export PATH=/bin
fail() { echo "KERNEL-FULL-FAIL $*"; poweroff -f; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys || fail "mount proc/sys"
grep -qw memory /proc/cgroups || fail "no memory cgroup"
C=/sys/fs/cgroup
mount -t tmpfs cgroup $C && mkdir $C/memory $C/cpu || fail "tmpfs on $C"
mount -t cgroup -o memory cgroup $C/memory || fail "mount the memory cgroup"
mkdir $C/memory/limited && echo 67108864 > $C/memory/limited/memory.limit_in_bytes ||
    fail "set a memory limit"
[ "$(cat $C/memory/limited/memory.limit_in_bytes)" = 67108864 ] || fail "limit not kept"
mount -t cgroup -o cpu cgroup $C/cpu || fail "mount the cpu cgroup"
mkdir $C/cpu/quota && echo 50000 > $C/cpu/quota/cpu.cfs_quota_us || fail "set a CPU quota"
for m in overlay bridge veth nf_nat; do modprobe $m || fail "modprobe $m"; done
mkdir /t && mount -t tmpfs t /t && mkdir /t/l /t/u /t/w /t/m && echo lower > /t/l/a ||
    fail "overlay dirs"
mount -t overlay overlay -o lowerdir=/t/l,upperdir=/t/u,workdir=/t/w /t/m ||
    fail "mount -t overlay"
[ "$(cat /t/m/a)" = lower ] || fail "overlay read"
ip link add br0 type bridge && ip link add vethx type veth && ip link set vethx master br0 ||
    fail "bridge and veth"
echo "KERNEL-FULL-OK $(uname -r)"
poweroff -f
"""


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    built = kernel_stage.cold_build(tmp_path_factory.mktemp("kernel-full"), full=True)
    assert built.result.returncode == 0, built.result.stderr[-3000:]
    return built


def initramfs(modules_tgz: Path, kver: str, work: Path) -> Path:
    """busybox, /init and the stage's lib/modules/<kver> tree (with its modules.dep)."""
    with tarfile.open(modules_tgz) as tar:
        tar.extractall(work / "mods", filter="data")
    entries = [
        cpio.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.file("init", INIT.encode(), 0o755),
        cpio.directory("proc"), cpio.directory("sys"),
        cpio.char_device("dev/console", 5, 1), cpio.char_device("dev/null", 1, 3, 0o666),
        *cpio.tree(work / "mods" / "lib" / "modules" / kver, f"lib/modules/{kver}"),
        *(cpio.symlink(f"bin/{applet}", "busybox") for applet in APPLETS),
    ]
    path = work / "initrd.gz"
    path.write_bytes(cpio.gzip_newc(entries))
    return path


def test_rebuilt_kernel_boots_with_memory_cgroup_cpu_quota_and_its_modules(full, tmp_path):
    kver = full.run.kver
    initrd = initramfs(full.run.kernel / f"modules-{kver}.tgz", kver, tmp_path)
    argv = ["qemu-system-x86_64", "-accel", accel_option("tcg"), "-m", "512", "-nographic", "-no-reboot",
            "-kernel", str(full.run.kernel / "vmlinuz64"), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1"]
    result = Runner(tmp_path, echo=lambda line: None).run(
        argv, log="full-kernel-vm", timeout=BOOT_TIMEOUT_S, check=False)
    lines = [line.strip() for line in result.output.splitlines()]
    tail = "\n".join(lines[-40:])
    assert [x for x in lines if x.startswith("KERNEL-FULL-FAIL")] == [], tail
    assert [m.group(1) for x in lines if (m := re.match(r"^KERNEL-FULL-OK (\S+)$", x))] == [
        kver], tail
