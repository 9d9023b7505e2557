"""One boot of a disk under QEMU, judged by the appliance's markers (for `test-image`).

QEMU writes the serial console to a file; the boot passes when that file shows the line
`APPLIANCE-READY` and the faasd gateway's /healthz (forwarded to a free 127.0.0.1 port)
answers 200. It fails on `APPLIANCE-NOT-READY <service>`, `APPLIANCE-LIVE`, QEMU exiting, or
the timeout. The guest is then powered off through the ACPI power button (QMP
`system_powerdown`); a guest that ignores it is stopped hard after a bounded wait, said so.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from appliance.run import Background, Runner
from appliance.vm import qemu, timeline

GATEWAY_PORT = 8080  # faasd's gateway in the guest
HEALTH_PATH = "/healthz"
HEALTH_TIMEOUT_S = 120.0  # READY means healthy; this only covers user networking's delays
POLL_S = 0.2  # the serial log's poll: a boot's time is this exact
PROGRESS_EVERY_S = 60.0
QUIT_WAIT_S = 10.0
QMP_TIMEOUT_S = 10.0

_MARKER = re.compile(
    r"^APPLIANCE-(?:(READY)|(LIVE)|(NOT-READY)(?:[ \t]+(\S+))?)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Marker:
    kind: str  # "ready", "not-ready" or "live"
    service: str | None = None

    def problem(self) -> str | None:
        """None for READY, else why the boot failed."""
        if self.kind == "ready":
            return None
        if self.kind == "live":
            return "APPLIANCE-LIVE: the live system booted, no service is loaded"
        return f"APPLIANCE-NOT-READY: service {self.service or '(unnamed)'} did not get ready"


def find_marker(serial: str) -> Marker | None:
    """The first APPLIANCE-* marker line on the serial console (docs/architecture.md#markers)."""
    match = _MARKER.search(serial.replace("\r", ""))
    if match is None:
        return None
    ready, live, _not_ready, service = match.groups()
    if ready:
        return Marker("ready")
    if live:
        return Marker("live")
    return Marker("not-ready", service)


# How each disk bus attaches the disk (QEMU device names). tc11 has ATA_PIIX, SATA_AHCI,
# SCSI_VIRTIO and BLK_DEV_NVME built in, and virtio_blk as a module of its base initrd.
DISK_BUSES = ("ide", "sata", "virtio-blk", "virtio-scsi", "nvme")
# The NICs hypervisors attach: e1000 (VirtualBox, VMware's OVF default, Packer's), virtio-net
# (libvirt, OpenStack, Proxmox), vmxnet3 (VMware); all three are in tc11's base modules.
NICS = {"e1000": "e1000", "virtio": "virtio-net-pci", "vmxnet3": "vmxnet3"}


def disk_argv(bus: str, disk: Path) -> list[str]:
    """QEMU arguments that attach `disk` (qcow2) on `bus` (pure)."""
    if bus == "ide":
        return ["-drive", f"file={disk},if=ide,format=qcow2"]
    drive = ["-drive", f"file={disk},if=none,id=disk0,format=qcow2"]
    devices = {
        "sata": ["-device", "ahci,id=ahci0", "-device", "ide-hd,drive=disk0,bus=ahci0.0"],
        "virtio-blk": ["-device", "virtio-blk-pci,drive=disk0"],
        "virtio-scsi": ["-device", "virtio-scsi-pci,id=scsi0",
                        "-device", "scsi-hd,drive=disk0,bus=scsi0.0"],
        "nvme": ["-device", "nvme,drive=disk0,serial=tc-appliance"],
    }
    if bus not in devices:
        raise ValueError(f"unknown disk bus {bus!r} (one of {', '.join(DISK_BUSES)})")
    return drive + devices[bus]


# The CDs (a NoCloud seed, an OVF environment) go on the PIIX IDE controller that `-machine
# pc` always has, on its secondary channel: whatever bus the disk uses, it never takes ide.1
# (an IDE disk is ide.0 unit 0), and tc11's ata_piix (built in) drives it, as it drives the
# CD a hypervisor attaches for its seed. Two units: at most two CDs.
CDROM_UNITS = (("ide.1", 0), ("ide.1", 1))


def cdrom_argv(isos: tuple[Path, ...]) -> list[str]:
    """QEMU arguments that attach each ISO as a read-only CD-ROM (pure)."""
    if len(isos) > len(CDROM_UNITS):
        raise ValueError(f"at most {len(CDROM_UNITS)} CDs, got {len(isos)}")
    argv: list[str] = []
    for n, (iso, (bus, unit)) in enumerate(zip(isos, CDROM_UNITS, strict=False)):
        argv += ["-drive", f"file={iso},if=none,id=cd{n},media=cdrom,format=raw,readonly=on",
                 "-device", f"ide-cd,drive=cd{n},bus={bus},unit={unit}"]
    return argv


def nic_argv(nic: str, host_port: int) -> list[str]:
    """QEMU arguments for the NIC on user networking, the gateway forwarded (pure)."""
    if nic not in NICS:
        raise ValueError(f"unknown NIC {nic!r} (one of {', '.join(NICS)})")
    fwd = f"hostfwd=tcp:127.0.0.1:{host_port}-:{GATEWAY_PORT}"
    return ["-netdev", f"user,id=net0,{fwd}", "-device", f"{NICS[nic]},netdev=net0"]


@dataclass(frozen=True)
class BootSpec:
    disk: Path  # the qcow2 overlay, never the deliverable
    accel: str  # "kvm" or "tcg"
    memory_mb: int
    cpus: int
    serial_log: Path
    qmp_socket: Path
    host_port: int  # 127.0.0.1:host_port -> guest :8080
    disk_bus: str = "ide"
    nic: str = "e1000"
    cdroms: tuple[Path, ...] = ()  # first-boot CDs (test-image --seed / --ovf-env)


def qemu_argv(spec: BootSpec) -> list[str]:
    """The QEMU command line of one boot (pure); IDE and e1000 are what the OVF describes."""
    return [
        "qemu-system-x86_64", "-accel", qemu.accel_option(spec.accel), "-machine", "pc",
        "-smp", str(spec.cpus), "-m", str(spec.memory_mb),
        "-display", "none",
        *disk_argv(spec.disk_bus, spec.disk),
        *cdrom_argv(spec.cdroms),
        *nic_argv(spec.nic, spec.host_port),
        "-serial", f"file:{spec.serial_log}",
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
    ]  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class BootResult:
    seconds: float  # QEMU start -> READY (or -> failure)
    problem: str | None = None  # None: READY, healthy and powered off
    hard_stop: bool = False  # the guest ignored the ACPI power button
    phases: tuple[timeline.Phase, ...] = ()  # this boot's APPLIANCE-PHASE lines


class Qmp:
    """A minimal QMP client: one command at a time, events skipped."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(QMP_TIMEOUT_S)
        self.sock.connect(str(path))
        self.stream = self.sock.makefile("rb")
        self._reply()  # the greeting
        self.execute("qmp_capabilities")

    def _reply(self) -> dict:
        while True:
            line = self.stream.readline()
            if not line:
                raise OSError("QEMU closed the QMP socket")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command: str) -> dict:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        reply = self._reply()
        if "error" in reply:
            raise OSError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
        return reply

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def qmp_command(path: Path, command: str) -> None:
    qmp = Qmp(path)
    try:
        qmp.execute(command)
    finally:
        qmp.close()


def exited_within(vm: Background, seconds: float) -> bool:
    try:
        vm.proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def last_line(path: Path) -> str:
    lines = read_text(path).replace("\r", "").strip().splitlines()
    return lines[-1][-160:] if lines else "none: nothing booted, or no console=ttyS0"


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class Boot:
    """One boot: start QEMU, wait for a marker, check /healthz, power off."""

    def __init__(self, runner: Runner, spec: BootSpec, label: str,
                 say: Callable[[str], None], warn: Callable[[str], None]):
        self.runner, self.spec, self.label = runner, spec, label
        self.say, self.warn = say, warn
        self.log_name = f"{label.replace(' ', '')}-qemu"  # "boot1-qemu"
        self.qemu_log = runner.log_path(self.log_name)

    def run(self, timeout_s: float, shutdown_timeout_s: float) -> BootResult:
        result = self.boot(timeout_s, shutdown_timeout_s)
        # read once QEMU is gone: the log is complete. One log holds one boot.
        boots = timeline.parse(read_text(self.spec.serial_log))
        return replace(result, phases=tuple(boots[0]) if boots else ())

    def boot(self, timeout_s: float, shutdown_timeout_s: float) -> BootResult:
        self.spec.serial_log.touch()
        start = time.monotonic()
        vm = self.runner.start(qemu_argv(self.spec), log=self.log_name)
        try:
            problem = self.wait_ready(vm, start, timeout_s)
            seconds = time.monotonic() - start
            if problem is None:
                self.say(f"{self.label}: ready after {seconds:.0f} s")
                problem = self.check_health()
            if problem is not None:
                return BootResult(seconds, problem)
            return BootResult(seconds, None, not self.power_off(vm, shutdown_timeout_s))
        finally:
            vm.stop()

    def wait_ready(self, vm: Background, start: float, timeout_s: float) -> str | None:
        """None once APPLIANCE-READY shows; else what went wrong."""
        self.say(f"{self.label}: waiting for APPLIANCE-READY on the serial console "
                 f"(timeout {timeout_s:g} s)...")
        next_note = start + PROGRESS_EVERY_S
        while True:
            marker = find_marker(read_text(self.spec.serial_log))
            if marker is not None:
                return marker.problem()
            if not vm.running():
                return (f"QEMU exited (code {vm.proc.returncode}) before a marker: "
                        f"{last_line(self.qemu_log) if self.qemu_log else ''}")
            now = time.monotonic()
            if now - start > timeout_s:
                return (f"no APPLIANCE-READY within {timeout_s:g} s (last serial line: "
                        f"{last_line(self.spec.serial_log)})")
            if now >= next_note:
                self.say(f"{self.label}: still waiting ({now - start:.0f} s); last serial "
                         f"line: {last_line(self.spec.serial_log)}")
                next_note += PROGRESS_EVERY_S
            time.sleep(POLL_S)

    def check_health(self) -> str | None:
        url = f"http://127.0.0.1:{self.spec.host_port}{HEALTH_PATH}"
        answer = wait_for_health(url, HEALTH_TIMEOUT_S)
        if answer == "200":
            self.say(f"{self.label}: GET {HEALTH_PATH} -> 200")
            return None
        return f"GET {HEALTH_PATH} (guest port {GATEWAY_PORT}) did not answer 200 " \
               f"within {HEALTH_TIMEOUT_S:g} s after READY: {answer}"

    def power_off(self, vm: Background, timeout_s: float) -> bool:
        """True when the guest powered itself off after the ACPI power button."""
        self.say(f"{self.label}: ACPI power button (QMP system_powerdown)...")
        try:
            qmp_command(self.spec.qmp_socket, "system_powerdown")
        except (OSError, ValueError) as exc:
            self.warn(f"{self.label}: could not press the power button: {exc}")
        if exited_within(vm, timeout_s):
            self.say(f"{self.label}: powered off")
            return True
        self.warn(f"{self.label}: the guest did not power off within {timeout_s:g} s of the "
                  "ACPI power button; stopping QEMU (no acpid in the guest?)")
        try:
            qmp_command(self.spec.qmp_socket, "quit")
        except (OSError, ValueError):
            pass
        exited_within(vm, QUIT_WAIT_S)
        return False


def wait_for_health(url: str, timeout_s: float) -> str:
    """'200', or the last status or error seen when the time ran out."""
    session = requests.Session()
    session.trust_env = False  # never through an HTTP proxy: this is 127.0.0.1
    deadline = time.monotonic() + timeout_s
    seen = "no answer"
    while True:
        try:
            resp = session.get(url, timeout=10)
            if resp.status_code == 200:
                return "200"
            seen = f"HTTP {resp.status_code}"
        except requests.ConnectionError:
            seen = "no connection (nothing listening on the guest's port?)"
        except requests.RequestException as exc:
            seen = type(exc).__name__
        if time.monotonic() > deadline:
            return seen
        time.sleep(2)
