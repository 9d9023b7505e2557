"""The kernel stage's overlay extension in the stand-in guest: tc11's kernel has no overlayfs
until overlay-KERNEL.tcz is loaded; then `modprobe overlay` works and so does an overlay mount.

The extension comes from the real `pipeline.py build --until kernel` (tests/kernel_stage.py,
shared with the tools test), is put on a test disk with a /opt/bootlocal.sh restored from its
mydata.tgz, and the guest (booted with noembed, as the appliance runs containers) reports one
marker line on the serial console.
"""

from __future__ import annotations

import shutil

import pytest

from tests import kernel_stage
from tests.vm.disks import fields, make_disk, mydata
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

PROMPT_TIMEOUT_S = 120
GUEST_TIMEOUT_S = 300

# Every command's status goes into the marker; nothing is waited on by time.
BOOTLOCAL = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
D=/mnt/sda1
O=/tmp/ov
modprobe overlay > /tmp/before.log 2>&1
before=$?
su tc -c "tce-load -i $D/overlay-$(uname -r).tcz" > /tmp/load.log 2>&1
load=$?
[ $load -eq 0 ] || tail -n 5 /tmp/load.log > /dev/console
modprobe overlay > /tmp/after.log 2>&1
after=$?
loaded=$(grep -c '^overlay ' /proc/modules)
mkdir -p $O/lower $O/upper $O/work $O/merged
echo from-lower > $O/lower/a
mount -t overlay overlay -o lowerdir=$O/lower,upperdir=$O/upper,workdir=$O/work $O/merged \\
    > /tmp/mount.log 2>&1
mounted=$?
[ $mounted -eq 0 ] || cat /tmp/mount.log > /dev/console
read=$(cat $O/merged/a 2>/dev/null)
echo from-merged > $O/merged/b 2>/dev/null
upper=$(cat $O/upper/b 2>/dev/null)
[ -e $O/lower/b ] && lower=touched || lower=untouched
root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
echo "KERNEL-OVERLAY: before=$before load=$load after=$after loaded=$loaded mount=$mounted \
read=${read:-none} upper=${upper:-none} lower=$lower root=$root" > /dev/console
"""


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    built = kernel_stage.cold_build(tmp_path_factory.mktemp("kernel-stage"))
    assert built.result.returncode == 0, built.result.stderr[-3000:]
    return built


def test_overlay_loads_from_the_extension_and_mounts(cold, tmp_path):
    kver = cold.run.kver
    tree = tmp_path / "tree"
    tree.mkdir()
    name = f"overlay-{kver}.tcz"
    shutil.copyfile(cold.run.kernel / name, tree / name)
    (tree / "mydata.tgz").write_bytes(mydata({"opt/bootlocal.sh": (BOOTLOCAL, 0o775, 0, 50)}))
    disk = make_disk(tree, tmp_path / "disk.img", tmp_path)
    with VM(tmp_path, cdrom=cold.run.built.iso, disks=[disk], boot="d", name="overlay") as vm:
        vm.wait_for_screen(r"^boot:", PROMPT_TIMEOUT_S)
        vm.send_keys("corepure64 restore=sda1 noembed console=ttyS0\n")
        result = fields(vm.wait_for(r"^KERNEL-OVERLAY: (.*)$", GUEST_TIMEOUT_S).group(1))
    assert result["before"] != "0", vm.tail()  # tc11's kernel: no overlay anywhere
    assert result == {"before": result["before"], "load": "0", "after": "0", "loaded": "1",
                      "mount": "0", "read": "from-lower", "upper": "from-merged",
                      "lower": "untouched", "root": "tmpfs"}, vm.tail()
