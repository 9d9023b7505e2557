"""`make bench`'s boot section: boot-to-ready against a bare boot, and the boot timeline.

A bare boot is the same build's kernel and base initramfs (vmlinuz64 and corepure64.gz,
taken from the build's remastered live ISO) booted by QEMU with `-kernel/-initrd`, the
image's own Tiny Core boot codes (TINYCORE_FLAGS/VALUES: a frugal install's noembed, waitusb=
and tce=, read from test-image's first boot) and `base norestore noautologin` (no
extension, no backup, no service) on test-image's VM: the
same machine, memory, CPUs and accelerator, and the same hardware (a copy-on-write overlay of
the exported qcow2 on test-image's default disk bus, its default NIC), so Tiny Core finds
and probes what the appliance's boots find. It is timed from QEMU's start to the
stand-in's `STANDIN-BOOT:` line, which the stand-in's tc-config prints as its last act
(tests/standin/rootfs/etc/init.d/tc-config, boot_marker): Tiny Core's own tc-config prints
no such line, so this measure is for the stand-in only, as is the whole bench.
Boot-to-ready is test-image's per-boot time (QEMU start to APPLIANCE-READY).
"""

from __future__ import annotations

import re
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
# a bare boot keeps them. The rest (root=, the appliance's initrd, consoles) is dropped.
TINYCORE_FLAGS = ("noembed",)
TINYCORE_VALUES = ("waitusb=", "tce=")
COMMAND_LINE = re.compile(r"^(?:\[[ 0-9.]+\] )?Kernel command line: (.*?)\s*$", re.M)
BOOT_FILES = ("/boot/vmlinuz64", "/boot/corepure64.gz")
BARE_MARKER = "STANDIN-BOOT:"  # the stand-in's tc-config, at its end
POLL_S = 0.2


def tinycore_codes(serial_log: str) -> list[str]:
    """The Tiny Core codes (flags and values above) of the first kernel command line a
    boot's serial log shows, in its order."""
    found = COMMAND_LINE.search(serial_log)
    words = found[1].split() if found else []
    return [w for w in words if w in TINYCORE_FLAGS or w.startswith(TINYCORE_VALUES)]


def bare_argv(kernel: Path, initrd: Path, accel: str, serial: Path, disk: Path,
              port: int, codes: list[str]) -> list[str]:
    """QEMU for a bare boot (pure): test-image's machine, memory, CPUs, default disk bus
    (`disk`: an overlay of the image) and default NIC (`port`: its forward, unused); the
    image's Tiny Core `codes`, then BARE_BOOT_CODES."""
    hardware = Variant()
    return [
        "qemu-system-x86_64", "-accel", qemu.accel_option(accel), "-machine", "pc",
        "-smp", str(CPUS[accel]), "-m", str(DEFAULT_MEMORY_MB),
        "-display", "none", "-no-reboot",
        *boot_check.disk_argv(hardware.disk_bus, disk),
        *boot_check.nic_argv(hardware.nic, port),
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join([*codes, BARE_BOOT_CODES]),
        "-serial", f"file:{serial}",
    ]  # fmt: skip


def extract_boot_files(runner: Runner, iso: Path, dest: Path) -> tuple[Path, Path]:
    """vmlinuz64 and corepure64.gz out of the build's live ISO (what its installs boot)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = [dest / Path(p).name for p in BOOT_FILES]
    extract = [arg for p, o in zip(BOOT_FILES, out, strict=True) for arg in ("-extract", p, str(o))]
    runner.run(["xorriso", "-osirrox", "on", "-indev", iso, *extract], log="xorriso")
    return out[0], out[1]


def bare_boot(runner: Runner, iso: Path, image: Path, codes: list[str], accel: str,
              work: Path) -> float:
    """Seconds from QEMU's start to the stand-in's end of tc-config, booting bare with
    `image` (the exported qcow2, under an overlay) attached and its Tiny Core `codes`."""
    kernel, initrd = extract_boot_files(runner, iso, work)
    disk = work / "bare-overlay.qcow2"
    disk.unlink(missing_ok=True)
    runner.run(overlay_argv(image, "qcow2", disk), log="qemu-img")
    serial = work / "bare-serial.log"
    serial.write_text("")
    timeout = TIMEOUT_S[accel]
    start = time.monotonic()
    argv = bare_argv(kernel, initrd, accel, serial, disk, boot_check.free_port(), codes)
    vm = runner.start(argv, log="bare-qemu")
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
