"""`make bench`'s boot section: boot-to-ready against a bare boot, and the boot timeline.

A bare boot is the same image booted with no extension, no backup and no service, on
test-image's VM: the same machine, memory, CPUs and accelerator, the same disk bus and NIC.
The image is the exported qcow2 itself, converted to a raw copy in which one file differs:
the bootloader's configuration (/boot/extlinux/extlinux.conf, written by
packer/scripts/install-to-disk.sh), rewritten with debugfs so that SYSLINUX loads only the
base initramfs (the first INITRD: corepure64.gz; the appliance's initrds carry its boot
scripts) and passes only the image's own Tiny Core codes (TINYCORE_FLAGS/VALUES: a frugal
install's noembed, waitusb= and tce=) and `base norestore noautologin`. So the firmware,
SYSLINUX's loads, the kernel and Tiny Core's own work for that disk are the same as in the
appliance's boots. It is timed from QEMU's start to the stand-in's `STANDIN-BOOT:` line,
which the stand-in's tc-config prints as its last act
(tests/standin/rootfs/etc/init.d/tc-config, boot_marker): Tiny Core's own tc-config prints
no such line, so this measure is for the stand-in only, as is the whole bench. Each bare
boot is on a fresh overlay of that copy.
Boot-to-ready is test-image's per-boot time (QEMU start to APPLIANCE-READY).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from appliance.errors import PipelineError
from appliance.run import Runner
from appliance.vm import boot_check, qemu, timeline
from appliance.vm.boot_check import read_text
from appliance.vm.image_boot import CPUS, DEFAULT_MEMORY_MB, TIMEOUT_S, Variant, overlay_argv
from appliance.vm.timeline import Phase

BARE_BOOT_CODES = "console=ttyS0,115200 base norestore noautologin"
# Of the image's own boot line, the codes that decide how Tiny Core itself starts on that
# disk (a frugal install: noembed's switch_root, the wait for its disk, its tce directory);
# a bare boot keeps them. The rest (root=, consoles, the recipe's codes) is dropped.
TINYCORE_FLAGS = ("noembed",)
TINYCORE_VALUES = ("waitusb=", "tce=")
BOOTLOADER_CONF = "/boot/extlinux/extlinux.conf"
BARE_MARKER = "STANDIN-BOOT:"  # the stand-in's tc-config, at its end
POLL_S = 0.2
SECTOR = 512
# MBR partition entry 1: its first sector (LBA, little-endian u32) at byte 454.
PARTITION_1_LBA = 446 + 8


def tinycore_codes(append: str) -> list[str]:
    """The Tiny Core codes (flags and values above) of a boot line, in its order."""
    return [w for w in append.split() if w in TINYCORE_FLAGS or w.startswith(TINYCORE_VALUES)]


def bare_extlinux(conf: str) -> str:
    """The image's extlinux.conf for a bare boot (pure): each INITRD keeps its first file
    (the base initramfs), each APPEND only the Tiny Core codes, then BARE_BOOT_CODES."""
    out = []
    for line in conf.splitlines():
        key, _, value = line.strip().partition(" ")
        indent = line[:len(line) - len(line.lstrip())]
        if key.upper() == "INITRD":
            line = f"{indent}{key} {value.split(',')[0].strip()}"
        elif key.upper() == "APPEND":
            line = f"{indent}{key} {' '.join([*tinycore_codes(value), BARE_BOOT_CODES])}"
        out.append(line)
    return "\n".join(out) + "\n"


def partition_offset(mbr: bytes) -> int:
    """Byte offset of the first partition of a disk (pure), from its MBR."""
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise PipelineError("bare boot: the image has no MBR partition table",
                            "is it a disk install-to-disk.sh wrote?")
    (lba,) = struct.unpack_from("<I", mbr, PARTITION_1_LBA)
    if lba == 0:
        raise PipelineError("bare boot: the image's first partition is empty",
                            "is it a disk install-to-disk.sh wrote?")
    return lba * SECTOR


def bare_argv(accel: str, serial: Path, disk: Path, port: int) -> list[str]:
    """QEMU for a bare boot (pure): test-image's machine, memory, CPUs, default disk bus
    (`disk`: an overlay of the bare copy, booted by its own bootloader) and default NIC
    (`port`: its forward, unused)."""
    hardware = Variant()
    return [
        "qemu-system-x86_64", "-accel", qemu.accel_option(accel), "-machine", "pc",
        "-smp", str(CPUS[accel]), "-m", str(DEFAULT_MEMORY_MB),
        "-display", "none", "-no-reboot",
        *boot_check.disk_argv(hardware.disk_bus, disk),
        *boot_check.nic_argv(hardware.nic, port),
        "-serial", f"file:{serial}",
    ]  # fmt: skip


def bare_disk(runner: Runner, image: Path, work: Path) -> tuple[Path, str]:
    """A raw copy of `image` whose bootloader starts Tiny Core bare; and its new APPEND."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "bare-disk.raw"
    raw.unlink(missing_ok=True)
    runner.run(["qemu-img", "convert", "-O", "raw", image, raw], log="qemu-img")
    with raw.open("rb") as disk:
        device = f"{raw}?offset={partition_offset(disk.read(SECTOR))}"  # e2fsprogs' io option
    theirs, ours = work / "extlinux.conf", work / "extlinux.bare.conf"
    dump(runner, device, theirs)
    ours.write_text(bare_extlinux(theirs.read_text()))
    commands = work / "debugfs.cmds"
    commands.write_text(f"rm {BOOTLOADER_CONF}\nwrite {ours} {BOOTLOADER_CONF}\n")
    runner.run(["debugfs", "-w", "-f", commands, device], log="debugfs")
    dump(runner, device, theirs)  # debugfs exits 0 whatever its commands did: read it back
    if theirs.read_text() != ours.read_text():
        raise PipelineError(f"bare boot: debugfs did not rewrite {BOOTLOADER_CONF} in {raw}",
                            f"see {runner.log_path('debugfs')}")
    append = next((ln.split(None, 1)[1] for ln in ours.read_text().splitlines()
                   if ln.strip().upper().startswith("APPEND ")), "")
    return raw, append


def dump(runner: Runner, device: str, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    runner.run(["debugfs", "-R", f"dump {BOOTLOADER_CONF} {dest}", device], log="debugfs")
    if not dest.is_file():
        raise PipelineError(f"bare boot: no {BOOTLOADER_CONF} in the image",
                            "the bench boots disks that install-to-disk.sh wrote")


def bare_boot(runner: Runner, raw: Path, accel: str, work: Path) -> float:
    """Seconds from QEMU's start to the stand-in's end of tc-config, booting `raw` (from
    bare_disk) on a fresh overlay."""
    disk = work / "bare-overlay.qcow2"
    disk.unlink(missing_ok=True)
    runner.run(overlay_argv(raw, "raw", disk), log="qemu-img")
    serial = work / "bare-serial.log"
    serial.write_text("")
    timeout = TIMEOUT_S[accel]
    start = time.monotonic()
    vm = runner.start(bare_argv(accel, serial, disk, boot_check.free_port()), log="bare-qemu")
    try:
        while BARE_MARKER not in read_text(serial):
            if not vm.running():
                raise PipelineError(f"bare boot: QEMU exited before {BARE_MARKER} "
                                    f"(serial log {serial})")
            if time.monotonic() - start > timeout:
                raise PipelineError(f"bare boot: no {BARE_MARKER} within {timeout:g} s "
                                    f"(serial log {serial})")
            time.sleep(POLL_S)
        return time.monotonic() - start
    finally:
        vm.stop()


def serial_timelines(logs: Path, image: Path, boots: int = 2) -> list[list[Phase]]:
    """The timeline of each boot test-image kept (build/logs/test-image/<image>.bootN-serial.log)."""
    found = []
    for n in range(1, boots + 1):
        parsed = timeline.parse(read_text(logs / f"{image.name}.boot{n}-serial.log"))
        found.append(parsed[0] if parsed else [])
    return found


def timeline_rows(boots: list[list[Phase]]) -> list[list[str]]:
    """One row per phase any boot printed, in canonical order: the phase, then per boot its
    seconds since the kernel started and its delta from the boot's previous phase."""
    rows = []
    for name in timeline.PHASES:
        cells = []
        for boot in boots:
            index = next((i for i, p in enumerate(boot) if p.name == name), None)
            if index is None:
                cells.append("-")
                continue
            phase = boot[index]
            delta = f" (+{phase.seconds - boot[index - 1].seconds:.1f})" if index else ""
            detail = f" {phase.detail}" if phase.detail else ""
            cells.append(f"{phase.seconds:.1f}{delta}{detail}")
        if any(c != "-" for c in cells):
            rows.append([name, *cells])
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)
