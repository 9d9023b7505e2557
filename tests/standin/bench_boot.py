"""`make bench`'s boot section: boot-to-ready against a bare boot, and the boot timeline.

A bare boot is the same build's kernel and base initramfs (vmlinuz64 and corepure64.gz,
taken from the build's remastered live ISO) booted by QEMU with `-kernel/-initrd` and
`base norestore noautologin` (no extension, no backup, no service), no disk, on the same
memory, CPUs, accelerator and machine as `test-image`. It is timed from QEMU's start to the
stand-in's `STANDIN-BOOT:` line, which the stand-in's tc-config prints as its last act
(tests/standin/rootfs/etc/init.d/tc-config, boot_marker): Tiny Core's own tc-config prints
no such line, so this measure is for the stand-in only, as is the whole bench.
Boot-to-ready is test-image's per-boot time (QEMU start to APPLIANCE-READY).
"""

from __future__ import annotations

import time
from pathlib import Path

from appliance.errors import PipelineError
from appliance.run import Runner
from appliance.vm import qemu, timeline
from appliance.vm.boot_check import read_text
from appliance.vm.image_boot import CPUS, DEFAULT_MEMORY_MB, TIMEOUT_S
from appliance.vm.timeline import Phase

BARE_BOOT_CODES = "console=ttyS0,115200 base norestore noautologin"
BOOT_FILES = ("/boot/vmlinuz64", "/boot/corepure64.gz")
BARE_MARKER = "STANDIN-BOOT:"  # the stand-in's tc-config, at its end
POLL_S = 0.2


def bare_argv(kernel: Path, initrd: Path, accel: str, serial: Path) -> list[str]:
    """QEMU for a bare boot (pure): test-image's machine, memory, CPUs; no disk, no NIC."""
    return [
        "qemu-system-x86_64", "-accel", qemu.accel_option(accel), "-machine", "pc",
        "-smp", str(CPUS[accel]), "-m", str(DEFAULT_MEMORY_MB),
        "-display", "none", "-nic", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", BARE_BOOT_CODES,
        "-serial", f"file:{serial}",
    ]  # fmt: skip


def extract_boot_files(runner: Runner, iso: Path, dest: Path) -> tuple[Path, Path]:
    """vmlinuz64 and corepure64.gz out of the build's live ISO (what its installs boot)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = [dest / Path(p).name for p in BOOT_FILES]
    extract = [arg for p, o in zip(BOOT_FILES, out, strict=True) for arg in ("-extract", p, str(o))]
    runner.run(["xorriso", "-osirrox", "on", "-indev", iso, *extract], log="xorriso")
    return out[0], out[1]


def bare_boot(runner: Runner, iso: Path, accel: str, work: Path) -> float:
    """Seconds from QEMU's start to the stand-in's end of tc-config, booting bare."""
    kernel, initrd = extract_boot_files(runner, iso, work)
    serial = work / "bare-serial.log"
    serial.write_text("")
    timeout = TIMEOUT_S[accel]
    start = time.monotonic()
    vm = runner.start(bare_argv(kernel, initrd, accel, serial), log="bare-qemu")
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
