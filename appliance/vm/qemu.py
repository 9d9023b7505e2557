"""QEMU helpers: the accelerator probe (a /dev/kvm that exists may still not work)."""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ToolError
from appliance.paths import cache_root
from appliance.run import Runner

# A 512-byte boot sector (source: appliance/resources/accel-probe.S) that switches from real
# mode to 64-bit long mode with paging, then `out 0xf4` through QEMU's isa-debug-exit device:
# QEMU exits with (0x31 << 1) | 1 = 99, which proves guest code really ran under the
# accelerator in the CPU mode Linux uses.
PROBE_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cbf0010b90018f3ab66c70600100320000066c70600200330000066c706"
    "003083000000660f0116887c0f20e06683c8200f22e066b8001000000f22d866b9800000c00f3266"
    "0d000100000f300f20c0660d010000800f22c066ea6c7c00000800b031e6f4f40f1f800000000000"
    "0000000000000000000000009a20000f00787c0000"
)
PROBE_EXIT = 99
PROBE_TIMEOUT_S = 30
KERNEL_PROBE_TIMEOUT_S = 30  # a working KVM panics in ~2 s, TCG in ~5 s


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str


def probe_image() -> bytes:
    return PROBE_CODE + bytes(510 - len(PROBE_CODE)) + b"\x55\xaa"


def probe_argv(accel: str, image: Path) -> list[str]:
    """QEMU argv that boots the probe sector and exits through isa-debug-exit."""
    return [
        "qemu-system-x86_64", "-accel", accel, "-machine", "pc", "-m", "32",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive", f"file={image},format=raw,if=ide",
    ]  # fmt: skip


def kvm_device_usable() -> str | None:
    """None when /dev/kvm can be opened read-write, else why not."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible (add the user to the kvm group)"
    return None


def run_probe(runner: Runner, accel: str) -> str | None:
    """None when guest code ran under `accel`, else a short reason."""
    with tempfile.TemporaryDirectory(prefix="accel-probe-") as tmp:
        image = Path(tmp) / "probe.img"
        image.write_bytes(probe_image())
        try:
            result = runner.run(probe_argv(accel, image), timeout=PROBE_TIMEOUT_S, check=False)
        except ToolError as exc:
            return exc.message
    if result.returncode == PROBE_EXIT:
        return None
    if result.returncode < 0:
        return f"a {accel} test boot hung and was stopped after {PROBE_TIMEOUT_S} s"
    last = result.output.strip().splitlines()[-1:] or ["no output"]
    return f"a {accel} test boot failed (exit {result.returncode}: {last[0]})"


def kernel_probe_argv(accel: str, kernel: Path) -> list[str]:
    """Boot a Linux kernel with no root: it panics, and panic=-1 + -no-reboot ends QEMU."""
    return [
        "qemu-system-x86_64", "-accel", accel, "-m", "256", "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip


def run_kernel_probe(runner: Runner, accel: str, kernel: Path) -> str | None:
    """None when a real kernel boots to its (expected) panic under `accel`."""
    try:
        result = runner.run(kernel_probe_argv(accel, kernel), timeout=KERNEL_PROBE_TIMEOUT_S,
                            check=False)
    except ToolError as exc:
        return exc.message
    if result.returncode == 0 and "Kernel panic" in result.output:
        return None
    if result.returncode < 0:
        return f"a {accel} boot of {kernel.name} hung ({KERNEL_PROBE_TIMEOUT_S} s, no panic)"
    return f"a {accel} boot of {kernel.name} failed (exit {result.returncode})"


def find_probe_kernel() -> Path | None:
    """A Linux kernel to probe with: $APPLIANCE_PROBE_KERNEL, the stand-in's, or the host's."""
    env = os.environ.get("APPLIANCE_PROBE_KERNEL")
    if env:
        return Path(env) if Path(env).is_file() else None
    candidates = sorted(cache_root().glob("standin/kernel/*/bzImage"))
    candidates += sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    readable = [c for c in candidates if os.access(c, os.R_OK)]
    return readable[0] if readable else None


@functools.lru_cache(maxsize=4)
def accelerator(kernel: Path | None = None) -> Accel:
    """The probe's verdict, once per process (and kernel)."""
    return probe_accelerator(Runner(echo=lambda line: None), kernel or find_probe_kernel())


def probe_accelerator(runner: Runner, kernel: Path | None = None) -> Accel:
    """KVM only if QEMU really runs guests under it; otherwise TCG, saying why.

    A boot sector in long mode is not enough: on some hosts (nested, PVM) KVM runs that
    and then hangs a real Linux kernel without a single line, so with a kernel at hand
    the probe boots it too."""
    why = kvm_device_usable() or run_probe(runner, "kvm")
    if why is None and kernel is not None:
        why = run_kernel_probe(runner, "kvm", kernel)
    if why is None:
        how = f"a KVM boot of {kernel} worked" if kernel else (
            "KVM ran the boot-sector probe; no Linux kernel was found for the full probe "
            "(set APPLIANCE_PROBE_KERNEL)")
        return Accel("kvm", how)
    tcg_problem = run_probe(runner, "tcg")
    if tcg_problem:
        raise ToolError(f"QEMU cannot run a guest at all: {tcg_problem}",
                        "check the qemu-system-x86 installation (`make deps`)")
    return Accel("tcg", f"KVM unusable ({why}); using TCG software emulation (slower)")
