"""QEMU helpers: the accelerator probe (a /dev/kvm that exists may still not work)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance import files, log
from appliance.errors import PipelineError, ToolError
from appliance.paths import cache_root, claim
from appliance.run import Runner
from appliance.tools import tool_version

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
# TCG's translation cache. QEMU 7.2 (Debian 12) gives a system guest 1 GiB. Measured with the
# stand-in (TCG, 1 vCPU, 2 GiB; docs/decisions.md#tcg-translation-cache), 64 MiB instead:
# a bare boot to the end of tc-config 6.5 s instead of 8.3-9.1 s, an appliance boot to
# READY 18 s instead of 23 s, and a boot after a reset (Packer's reboot from the live ISO into
# the disk) 7 s instead of 25-90 s. After a reset the kernel's decompressor crawled, with the
# previous boot's translations still cached; a cache that fills up is flushed.
TCG_TB_SIZE_MB = 64
PROBE_TIMEOUT_S = 30
KERNEL_PROBE_TIMEOUT_S = 30  # a working KVM panics in ~2 s, TCG in ~5 s
VERDICT_FORMAT = 1


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str
    # False when KVM ran only the boot sector: no Linux kernel was at hand to confirm it
    verified: bool = True
    cached: str | None = None  # the cache file the verdict came from, if it was not probed


def accel_option(name: str) -> str:
    """The value of QEMU's -accel for the accelerator `name` (the probe checks it is accepted)."""
    return f"tcg,tb-size={TCG_TB_SIZE_MB}" if name == "tcg" else name


def probe_image() -> bytes:
    return PROBE_CODE + bytes(510 - len(PROBE_CODE)) + b"\x55\xaa"


def probe_argv(accel: str, image: Path) -> list[str]:
    """QEMU argv that boots the probe sector and exits through isa-debug-exit."""
    return [
        "qemu-system-x86_64", "-accel", accel_option(accel), "-machine", "pc", "-m", "32",
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
        "qemu-system-x86_64", "-accel", accel_option(accel), "-m", "256", "-nodefaults",
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


_reprobe = False


def reprobe() -> None:
    """--reprobe: ignore (and then replace) the cached verdict."""
    global _reprobe
    _reprobe = True
    accelerator.cache_clear()


@functools.lru_cache(maxsize=4)
def accelerator(kernel: Path | None = None) -> Accel:
    """The probe's verdict, once per process (and kernel), and cached on disk.

    A probe of a KVM that hangs costs its full timeout (about 30 s on a TCG-only host with
    a /dev/kvm); the verdict only changes with what it is keyed by."""
    kernel = kernel or find_probe_kernel()
    key = verdict_key(kernel)
    path = verdict_path(key)
    if not _reprobe:
        cached = read_verdict(path, key)
        if cached is not None:
            return cached
    accel = probe_accelerator(Runner(echo=lambda line: None), kernel)
    write_verdict(path, key, accel)
    return accel


def kvm_identity() -> list[int] | None:
    """/dev/kvm's st_dev, st_ino, st_rdev and mtime: a reloaded module or a new device node
    (another VM host, a changed permission setup) makes a new verdict."""
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_rdev, st.st_mtime_ns]


def verdict_key(kernel: Path | None) -> dict:
    return {"format": VERDICT_FORMAT, "host_kernel": os.uname().release,
            "qemu": tool_version(("qemu-system-x86_64", "--version")),
            "kvm": kvm_identity(), "kvm_access": os.access("/dev/kvm", os.R_OK | os.W_OK),
            "probe_kernel": str(kernel) if kernel else None}


def verdict_path(key: dict) -> Path:
    blob = json.dumps(key, sort_keys=True).encode()
    return cache_root() / "accel" / f"{hashlib.sha256(blob).hexdigest()[:32]}.json"


def read_verdict(path: Path, key: dict) -> Accel | None:
    try:
        data = json.loads(path.read_text())
        if data["key"] != key or data["name"] not in ("kvm", "tcg"):
            return None
        return Accel(data["name"], str(data["reason"]), bool(data["verified"]), str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_verdict(path: Path, key: dict, accel: Accel) -> None:
    data = {"key": key, "name": accel.name, "reason": accel.reason, "verified": accel.verified}
    try:
        claim(cache_root())
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, json.dumps(data, indent=2) + "\n")
    except (OSError, PipelineError) as exc:  # a cache: the next run simply probes again
        log.warn(f"could not cache the accelerator verdict: {exc}")


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
        return Accel("kvm", how, verified=kernel is not None)
    tcg_problem = run_probe(runner, "tcg")
    if tcg_problem:
        raise ToolError(f"QEMU cannot run a guest at all: {tcg_problem}",
                        "check the qemu-system-x86 installation (`make deps`)")
    return Accel("tcg", f"KVM unusable ({why}); using TCG software emulation (slower)")
