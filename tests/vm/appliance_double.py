"""A bootable disk that acts like the appliance for `test-image` (a test double, not it).

The stand-in ISO's files (kernel, corepure64.gz, isolinux) plus boot/double.gz, an initrd
whose /opt/bootlocal.sh plays the appliance: busybox httpd serves /healthz on port 8080 and
the console gets APPLIANCE-READY or APPLIANCE-NOT-READY <service>. The ISO is made hybrid
(isohybrid MBR), so BIOS boots it from an IDE hard disk, and 1 MiB of zeros follows it:
the double keeps its state in the disk's last sector, outside the ISO. The raw image is
converted to qcow2, so test-image boots it exactly as a deliverable.

Modes (what the double says at a boot that finds the state written by an earlier boot):
  persist     READY again (the first boot also says READY)
  firstboot   APPLIANCE-NOT-READY firstboot-only: fails at boot 2, but only if boot 2 runs
              on the disk boot 1 wrote, so it proves test-image reuses the overlay
  nohealth    READY, but no HTTP server: /healthz never answers
"""

from __future__ import annotations

from pathlib import Path

from appliance.run import Runner
from appliance.tinycore import cpio
from tests.standin.iso import stage, xorriso_argv
from tests.standin.kernel import build_kernel
from tests.standin.rootfs import build_rootfs, source_date_epoch

MODES = ("persist", "firstboot", "nohealth")
STATE_BYTES = 1024 * 1024

ISOLINUX_CFG = """\
serial 0 115200
default double
label double
	kernel /boot/vmlinuz64
	initrd /boot/corepure64.gz,/boot/double.gz
	append loglevel=3 norestore console=tty0 console=ttyS0,115200
prompt 0
timeout 0
"""

BOOTLOCAL = """\
#!/bin/sh
# test-image's appliance double (tests/vm/appliance_double.py), mode @MODE@
mode=@MODE@
last=$(($(cat /sys/block/sda/size) - 1))
state=$(dd if=/dev/sda bs=512 skip="$last" count=1 2>/dev/null | tr -dc 'a-z-')
if [ "$mode" != nohealth ]; then
    mkdir -p /tmp/www && echo ok > /tmp/www/healthz
    busybox httpd -p 8080 -h /tmp/www
fi
if [ -z "$state" ]; then
    printf 'booted-once' | dd of=/dev/sda bs=512 seek="$last" 2>/dev/null
    sync
    echo "APPLIANCE-DOUBLE: first boot" > /dev/console
    echo APPLIANCE-READY > /dev/console
elif [ "$mode" = firstboot ]; then
    echo "APPLIANCE-NOT-READY firstboot-only" > /dev/console
else
    echo "APPLIANCE-DOUBLE: found $state" > /dev/console
    echo APPLIANCE-READY > /dev/console
fi
"""


def double_initrd(mode: str, epoch: int) -> bytes:
    script = BOOTLOCAL.replace("@MODE@", mode).encode()
    return cpio.gzip_newc([cpio.file("opt/bootlocal.sh", script, 0o755)], mtime=epoch)


def build_double(mode: str, work: Path) -> Path:
    """work/double-<mode>.qcow2, built from the (cached) stand-in kernel and userland."""
    assert mode in MODES, mode
    kernel = build_kernel()
    runner = Runner(work, echo=lambda line: None)
    epoch = source_date_epoch()
    staging = work / f"staging-{mode}"
    stage(staging, kernel.bzimage, build_rootfs(kernel, runner), epoch)
    (staging / "boot" / "isolinux" / "isolinux.cfg").write_text(ISOLINUX_CFG, encoding="ascii")
    (staging / "boot" / "double.gz").write_bytes(double_initrd(mode, epoch))
    raw = work / f"double-{mode}.img"
    runner.run(xorriso_argv(staging, raw, epoch), log="double")
    with open(raw, "ab") as f:
        f.write(bytes(STATE_BYTES))
    image = work / f"double-{mode}.qcow2"
    runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image], log="double")
    raw.unlink()
    return image
