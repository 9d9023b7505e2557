"""CorePure64-11.1.iso for the stand-in: Tiny Core 11's layout and plain `boot:` prompt.

    /boot/vmlinuz64                     the stand-in kernel
    /boot/corepure64.gz                 the stand-in userland (tests/standin/rootfs.py)
    /boot/isolinux/isolinux.bin         Debian's isolinux 6 (+ ldlinux.c32, which it needs)
    /boot/isolinux/isolinux.cfg         labels corepure64 and mc, prompt 1, timeout 300
    /boot/isolinux/boot.msg, f2-f4      the texts the prompt shows (F1..F4)
    /boot/isolinux/boot.cat             El Torito catalog (no-emulation, boot-info-table)

As on tc11 there is no `serial` directive: the prompt is on the VGA screen only (the
remaster adds serial later). isohybrid MBR, Rock Ridge and Joliet. Built with xorriso from
SOURCE_DATE_EPOCH (TZ=UTC, fixed modification date and file dates), so two builds are
byte-identical; cached by the kernel, the corepure64.gz digest and this builder's inputs.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
from pathlib import Path

from appliance.run import Runner
from tests.standin.cache import cached_build, component_dir
from tests.standin.rootfs import build_rootfs, sha256, source_date_epoch

BUILDER_VERSION = "1"  # bump when the ISO changes for the same inputs
ISO_NAME = "CorePure64-11.1.iso"
# Unconfirmed for the official ISO (no public copy of CorePure64-11.1's isolinux.cfg was found).
VOLUME_ID = "Core"
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")

# Tiny Core's stock Core config, for CorePure64's names; `mc` passes the initrd on the
# append line, as the stock one does.
ISOLINUX_CFG = """\
display boot.msg
default corepure64
label corepure64
	kernel /boot/vmlinuz64
	initrd /boot/corepure64.gz
	append loglevel=3

label mc
	kernel /boot/vmlinuz64
	append initrd=/boot/corepure64.gz loglevel=3
implicit 0
prompt 1
timeout 300
F1 boot.msg
F2 f2
F3 f3
F4 f4
"""

BOOT_MSG = """\

  Tiny Core Linux 11.1 (CorePure64) STAND-IN, made from Debian packages

  Press <Enter> to begin or F2, F3, or F4 to view boot options.

"""
F2 = """\

  Boot codes are typed after the label, e.g.:  corepure64 tce=sda1 noembed

  tce=DEV[/dir]    where extensions live (default: scan for a tce directory)
  lst=NAME         the list of extensions to load (default onboot.lst)
  restore=DEV      where mydata.tgz lies; norestore skips it
  home=DEV opt=DEV keep /home or /opt on a disk
  cde base         load the CD's /cde extensions; load nothing
"""
F3 = """\

  noembed          copy / into a tmpfs and switch_root (what runc needs)
  nodhcp noswap    no DHCP; no swap partitions
  user=NAME        the user (default tc)   host=NAME   the host name (default box)
  waitusb=N[:LABEL=x|UUID=y]   wait for slow devices
"""
F4 = """\

  This is a stand-in for tests (tests/standin): the real Tiny Core is at
  http://tinycorelinux.net/ and its scripts are not included.
"""
ISOLINUX_TEXTS = {"isolinux.cfg": ISOLINUX_CFG, "boot.msg": BOOT_MSG, "f2": F2, "f3": F3,
                  "f4": F4}  # fmt: skip


def xorriso_date(epoch: int) -> str:
    """YYYYMMDDhhmmsscc (UTC), the form --modification-date= and --set_all_file_dates take."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y%m%d%H%M%S00")


def xorriso_argv(staging: Path, out: Path, epoch: int) -> list[str]:
    """The xorriso command that makes the ISO (pure)."""
    date = xorriso_date(epoch)
    return [
        "xorriso", "-as", "mkisofs", "-o", str(out),
        "-V", VOLUME_ID, "-l", "-J", "-joliet-long", "-r",
        "-b", "boot/isolinux/isolinux.bin", "-c", "boot/isolinux/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "-isohybrid-mbr", str(ISOHDPFX),
        f"--modification-date={date}", "--set_all_file_dates", date,
        str(staging),
    ]  # fmt: skip


def stage(staging: Path, bzimage: Path, rootfs: Path, epoch: int) -> None:
    """The ISO's tree, every entry dated `epoch`."""
    isolinux = staging / "boot" / "isolinux"
    isolinux.mkdir(parents=True)
    shutil.copyfile(bzimage, staging / "boot" / "vmlinuz64")
    shutil.copyfile(rootfs, staging / "boot" / "corepure64.gz")
    shutil.copyfile(ISOLINUX_BIN, isolinux / "isolinux.bin")
    shutil.copyfile(LDLINUX_C32, isolinux / "ldlinux.c32")
    for name, text in ISOLINUX_TEXTS.items():
        (isolinux / name).write_text(text, encoding="ascii")
    for path in [staging, *staging.rglob("*")]:
        os.utime(path, (epoch, epoch))


def build_iso(kernel=None, runner: Runner | None = None) -> Path:
    """The stand-in ISO, building (or reusing) the kernel and corepure64.gz it needs."""
    if kernel is None:
        from tests.standin.kernel import build_kernel

        kernel = build_kernel()
    runner = runner or Runner(component_dir("logs"), echo=lambda line: None)
    rootfs = build_rootfs(kernel, runner)
    epoch = source_date_epoch()
    material = {
        "builder": BUILDER_VERSION,
        "kernel": kernel.path.name,
        "bzImage": sha256(kernel.bzimage),
        "rootfs": sha256(rootfs),
        "isolinux": {p.name: sha256(p) for p in (ISOLINUX_BIN, LDLINUX_C32, ISOHDPFX)},
        "texts": ISOLINUX_TEXTS,
        "argv": xorriso_argv(Path("STAGING"), Path("OUT"), epoch),
        "xorriso": runner.run(["xorriso", "-version"], log="iso").output.splitlines()[0],
    }

    def build(work: Path) -> dict:
        staging = work / "staging"
        stage(staging, kernel.bzimage, rootfs, epoch)
        out = work / ISO_NAME
        env = {"SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC"}
        runner.run(xorriso_argv(staging, out, epoch), env=env, log="iso")
        shutil.rmtree(staging)
        md5 = hashlib.md5(out.read_bytes()).hexdigest()
        (work / f"{ISO_NAME}.md5.txt").write_text(f"{md5}  {ISO_NAME}\n", encoding="ascii")
        return {
            "bytes": out.stat().st_size,
            "md5": md5,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        }

    return cached_build("iso", material, build) / ISO_NAME
