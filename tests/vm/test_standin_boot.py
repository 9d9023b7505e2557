"""The stand-in ISO boots like CorePure64-11.1 and honours Tiny Core's boot codes.

The ISO is built (or taken from the cache) by tests/standin/iso.py. Each boot is judged by
lines on the serial console, never by a sleep: tc-config's
    STANDIN-BOOT: root=<type of /> tce=<dir|none> restore=<done|none|failed> noembed=<0|1> ...
and, where the test disk's backup is restored, the line its /opt/bootlocal.sh prints:
    STANDIN-TEST: restored=... hello=<where the extension's file links to> installed=<uid>
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import pytest

from appliance.run import Runner
from appliance.tinycore.tcz import build_tcz
from tests.standin.iso import build_iso
from tests.standin.kernel import build_kernel
from tests.standin.rootfs import build_rootfs, source_date_epoch
from tests.vm.disks import fields, make_disk, mydata
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

PROMPT_TIMEOUT_S = 120  # BIOS + isolinux under TCG
BOOT_TIMEOUT_S = 240  # Enter -> STANDIN-BOOT under TCG
MARKER = r"^STANDIN-BOOT: (.*)$"
TEST_LINE = r"^STANDIN-TEST: (.*)$"

# /opt/bootlocal.sh inside the test's mydata.tgz: restore runs before bootsync.sh, so this
# is the bootlocal.sh that runs, and it reports what the boot codes did.
BOOTLOCAL = """#!/bin/sh
root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
echo "STANDIN-TEST: restored=$(cat /opt/restored-marker) hello=$(readlink /usr/local/bin/standin-hello)" \\
    "installed=$(cat /tmp/standin-test-installed) root=$root statfs=$(stat -f -c %T /)" > /dev/console
"""
HELLO = "#!/bin/sh\necho hello from the standin-test extension\n"
# Runs as root after tce-setup loaded every extension (tce-load queues it at boot).
INSTALL_SCRIPT = "#!/bin/sh\nid -u > /tmp/standin-test-installed\n"


@pytest.fixture(scope="module")
def kernel():
    return build_kernel()


@pytest.fixture(scope="module")
def iso(kernel):
    start = time.monotonic()
    path = build_iso(kernel)
    print(f"stand-in ISO {path} ({path.stat().st_size} bytes) in {time.monotonic() - start:.1f} s")
    return path


def make_extension(out_dir: Path, work: Path) -> None:
    tree = work / "standin-test"
    (tree / "usr/local/bin").mkdir(parents=True)
    (tree / "usr/local/tce.installed").mkdir(parents=True)
    (tree / "usr/local/bin/standin-hello").write_text(HELLO)
    (tree / "usr/local/bin/standin-hello").chmod(0o755)
    (tree / "usr/local/tce.installed/standin-test").write_text(INSTALL_SCRIPT)
    (tree / "usr/local/tce.installed/standin-test").chmod(0o755)
    info = {"Description": "vm test extension", "Version": "1", "Author": "tc-appliance",
            "Original-site": "-", "Copying-policy": "MIT"}  # fmt: skip
    build_tcz(tree, out_dir, "standin-test", [], info, Runner(work, echo=lambda line: None),
              source_date_epoch())  # fmt: skip


def mydata_tgz() -> bytes:
    """opt/restored-marker and opt/bootlocal.sh, as filetool.sh -b would have saved them."""
    return mydata({"opt/restored-marker": ("yes\n", 0o664, 0, 50),
                   "opt/bootlocal.sh": (BOOTLOCAL, 0o775, 0, 50)})


@pytest.fixture(scope="module")
def test_disk(tmp_path_factory) -> Path:
    """tce/optional/standin-test.tcz, tce/onboot.lst and mydata.tgz on sda1."""
    work = tmp_path_factory.mktemp("disk")
    tree = work / "tree"
    make_extension(tree / "tce" / "optional", work)
    (tree / "tce" / "onboot.lst").write_text("standin-test.tcz\n")
    (tree / "mydata.tgz").write_bytes(mydata_tgz())
    return make_disk(tree, work / "disk.img", work)


def boot_from_prompt(vm: VM, codes: str) -> tuple[float, dict[str, str]]:
    """At the boot: prompt (on the VGA screen), type `codes` + Enter; wait for the marker."""
    vm.wait_for_screen(r"^boot:", PROMPT_TIMEOUT_S)
    vm.send_keys(codes)
    vm.send_keys("\n")
    start = time.monotonic()
    marker = vm.wait_for(MARKER, BOOT_TIMEOUT_S)
    return time.monotonic() - start, fields(marker.group(1))


def test_iso_boots_to_the_prompt_and_honours_tce_restore_noembed(iso, test_disk, tmp_path):
    disk = tmp_path / "disk.img"
    shutil.copyfile(test_disk, disk)
    start = time.monotonic()
    with VM(tmp_path, cdrom=iso, disks=[disk], boot="d", name="noembed") as vm:
        screen = vm.wait_for_screen(r"^boot:", PROMPT_TIMEOUT_S)
        print(f"QEMU start -> boot: prompt in {time.monotonic() - start:.1f} s")
        assert "STAND-IN" in screen  # boot.msg, shown by `display boot.msg`
        seconds, marker = boot_from_prompt(vm, "corepure64 tce=sda1 restore=sda1 noembed "
                                               "console=ttyS0")  # fmt: skip
        test = fields(vm.wait_for(TEST_LINE, 60).group(1))
        print(f"Enter -> STANDIN-BOOT in {seconds:.1f} s: {marker}")
    assert marker["root"] == "tmpfs", vm.tail()
    assert marker["noembed"] == "1"
    assert marker["tce"] == "/mnt/sda1/tce"
    assert marker["restore"] == "done"
    assert marker["loaded"] == "1"
    assert test["restored"] == "yes"
    assert test["hello"] == "/tmp/tcloop/standin-test/usr/local/bin/standin-hello"
    assert test["installed"] == "0"  # the tce.installed script ran as root
    assert test["root"] == "tmpfs"


def test_without_noembed_root_stays_the_initramfs(iso, test_disk, tmp_path):
    disk = tmp_path / "disk.img"
    shutil.copyfile(test_disk, disk)
    with VM(tmp_path, cdrom=iso, disks=[disk], boot="d", name="embed") as vm:
        seconds, marker = boot_from_prompt(vm, "corepure64 tce=sda1 norestore console=ttyS0")
        print(f"Enter -> STANDIN-BOOT in {seconds:.1f} s: {marker}")
    assert marker["root"] == "rootfs", vm.tail()
    assert marker["noembed"] == "0"
    assert marker["tce"] == "/mnt/sda1/tce"
    assert marker["restore"] == "none"
    assert marker["loaded"] == "1"


def unpack_rootfs(archive: Path, tree: Path, work: Path) -> None:
    """corepure64.gz unpacked as Tiny Core's installer does (owners and device nodes kept)."""
    raw = work / "corepure64.cpio"
    raw.write_bytes(gzip.decompress(archive.read_bytes()))
    tree.mkdir()
    Runner(work, echo=lambda line: None).run(
        ["cpio", "-i", "-d", "-m", "--no-absolute-filenames", "-F", raw], cwd=tree, log="unpack"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="unpacking device nodes and owners needs root")
def test_traditional_disk_install_runs_the_same_scripts(kernel, tmp_path):
    tree = tmp_path / "root"
    unpack_rootfs(build_rootfs(kernel), tree, tmp_path)
    disk = make_disk(tree, tmp_path / "root.img", tmp_path)
    append = "root=/dev/sda1 loglevel=3 console=ttyS0"
    with VM(tmp_path, kernel=kernel.bzimage, append=append, disks=[disk], name="disk") as vm:
        marker = fields(vm.wait_for(MARKER, BOOT_TIMEOUT_S).group(1))
        detected = "Detected Traditional Hard drive installation" in vm.serial_text()
    assert marker["root"] == "ext4", vm.tail()
    assert detected, vm.tail()
    assert marker["noembed"] == "0"
