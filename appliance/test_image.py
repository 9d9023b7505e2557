"""`pipeline.py test-image [IMAGE...]`: boot a deliverable twice, as a user would import it.

The deliverable itself is never booted: each test runs on a fresh copy-on-write qcow2
overlay in a temporary folder (an OVA's disk is first extracted there). The same overlay
boots twice, with a clean ACPI power-off in between, because state that must survive a
reboot is where installs break (DESIGN.md section 9). Serial logs of a failed test are
kept in build/logs/test-image/.
"""

from __future__ import annotations

import glob
import shutil
import signal
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance import log, qemu_img
from appliance.boot_check import Boot, BootResult, BootSpec, free_port
from appliance.errors import PipelineError
from appliance.paths import build_root, out_root
from appliance.qemu import Accel, accelerator
from appliance.run import Runner

KINDS = {".qcow2": "qcow2", ".vmdk": "vmdk", ".ova": "ova"}
DEFAULT_MEMORY_MB = 2048
# QEMU start -> a marker, per boot: more than the boot plus the recipe's ready_timeout (600 s
# by default), so a service that hangs is named by its APPLIANCE-NOT-READY, not by our timeout.
TIMEOUT_S = {"tcg": 1200.0, "kvm": 900.0}
CPUS = {"tcg": 1, "kvm": 2}  # 2 vCPUs under TCG hung inside runc once (DESIGN.md section 6)
SHUTDOWN_TIMEOUT_S = 120.0
BOOTS = 2
HINT = "test-image boots a .qcow2 or .vmdk disk, or the .vmdk inside an .ova"


@dataclass(frozen=True)
class Options:
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float | None = None  # None: by accelerator (TIMEOUT_S)
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S


@dataclass(frozen=True)
class Target:
    image: Path  # as the user named it
    kind: str  # "qcow2", "vmdk" or "ova"
    member: str | None = None  # an OVA's disk member


@dataclass(frozen=True)
class Verdict:
    image: Path
    boots: tuple[BootResult, ...] = ()
    problem: str | None = None
    serial_log: Path | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        if self.problem is not None:
            kept = f"; serial log kept at {self.serial_log}" if self.serial_log else ""
            return f"test-image: FAIL {self.image}: {self.problem}{kept}"
        times = ", ".join(f"boot {n}: {b.seconds:.0f} s" for n, b in enumerate(self.boots, 1))
        hard = sum(b.hard_stop for b in self.boots)
        note = f"; {hard} ACPI power-off(s) ignored, QEMU stopped" if hard else ""
        return f"test-image: PASS {self.image} ({times}{note})"


# --- which images, and what they are -------------------------------------------------------

def default_images(out: Path) -> list[Path]:
    """Every deliverable in out/: the qcow2 files, then the OVAs."""
    found = sorted(out.glob("*.qcow2")) + sorted(out.glob("*.ova"))
    if not found:
        raise PipelineError(f"no image in {out} (no *.qcow2 or *.ova)",
                            "run `make image` first, or name an image: "
                            "`pipeline.py test-image PATH`")
    return found


def image_kind(path: Path) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise PipelineError(f"{path}: not a .qcow2, .vmdk or .ova file", HINT)
    return kind


def ovf_file_refs(ovf_text: str) -> list[str]:
    """The ovf:href of every References/File of an OVF descriptor, in order."""
    try:
        root = ET.fromstring(ovf_text)
    except ET.ParseError:
        return []
    return [value for element in root.iter() if element.tag.split("}")[-1] == "File"
            for name, value in element.attrib.items() if name.split("}")[-1] == "href"]


def ova_disk_member(names: list[str], ovf_text: str | None, ova: Path) -> str:
    """The OVA member to boot: the first .vmdk the OVF names, else the first .vmdk."""
    vmdks = [n for n in names if n.lower().endswith(".vmdk")]
    named = [h for h in ovf_file_refs(ovf_text or "") if h.lower().endswith(".vmdk")]
    if named:
        if named[0] not in names:
            raise PipelineError(f"{ova}: the OVF names the disk {named[0]}, "
                                "which the OVA does not contain", HINT)
        return named[0]
    if not vmdks:
        raise PipelineError(f"{ova}: no .vmdk disk in this OVA (members: "
                            f"{', '.join(names) or 'none'})", HINT)
    return vmdks[0]


def ova_member(ova: Path) -> str:
    try:
        with tarfile.open(ova, "r:") as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            ovf = next((m for m in files if m.name.lower().endswith(".ovf")), None)
            ovf_text = None
            if ovf is not None:
                ovf_text = tar.extractfile(ovf).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    except (tarfile.TarError, OSError) as exc:
        raise PipelineError(f"{ova}: not an OVA (tar archive): {exc}", HINT) from None
    return ova_disk_member([m.name for m in files], ovf_text, ova)


def extract_member(ova: Path, member: str, dest: Path) -> Path:
    """Copy one member out of the OVA, under its base name (never a path of the archive's)."""
    out = dest / Path(member).name
    with tarfile.open(ova, "r:") as tar:
        src = tar.extractfile(member)
        if src is None:
            raise PipelineError(f"{ova}: {member} is not a regular file", HINT)
        with src, open(out, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    return out


def check_format(runner: Runner, image: Path, fmt: str) -> None:
    """qemu-img must read `image` as `fmt` (named, never probed: a broken qcow2 is no raw)."""
    result = runner.run(qemu_img.info_argv(image, fmt), log="qemu-img", check=False)
    if result.returncode == 0 and qemu_img.json_block(result.output) is not None:
        return
    said = [ln for ln in result.output.splitlines() if ln.strip()]
    raise PipelineError(f"{image}: not a {fmt} disk image ({said[-1] if said else 'no output'})",
                        HINT)


def overlay_argv(backing: Path, fmt: str, overlay: Path) -> list[str]:
    """A copy-on-write qcow2 over the deliverable (pure): the guest writes only the overlay."""
    return ["qemu-img", "create", "-f", "qcow2", "-F", fmt,
            "-b", str(backing.resolve()), str(overlay)]


def prepare(paths: list[Path], runner: Runner) -> list[Target]:
    """Check every image before any boot: present, a known kind, readable as that kind."""
    targets = []
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"{path}: no such image", "run `make image` first, or check the path")
        kind = image_kind(path)
        if kind == "ova":
            targets.append(Target(path, kind, ova_member(path)))
        else:
            check_format(runner, path, kind)
            targets.append(Target(path, kind))
    return targets


# --- booting ------------------------------------------------------------------------------

def logs_dir() -> Path:
    return build_root() / "logs" / "test-image"


def keep_logs(work: Path, image: Path) -> Path:
    """Copy the work folder's logs to build/logs/test-image/<image>.<log>; return the folder."""
    dest = logs_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(work.glob("*.log")):
        shutil.copyfile(path, dest / f"{image.name}.{path.name}")
    return dest


def forget_logs(image: Path) -> None:
    for path in logs_dir().glob(f"{glob.escape(image.name)}.*.log"):
        path.unlink()


@contextmanager
def scratch():
    """(work folder under build/ for the overlay, short folder for the QMP sockets)."""
    build_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="test-image-", dir=build_root()))
    sockets = Path(tempfile.mkdtemp(prefix="ti-"))  # a unix socket path holds ~108 bytes
    try:
        yield work, sockets
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)


def check_target(target: Target, options: Options, accel: Accel) -> Verdict:
    forget_logs(target.image)
    with scratch() as (work, sockets):
        runner = Runner(log_dir=work, echo=log.detail)
        try:
            overlay = make_overlay(target, work, runner)
        except PipelineError as exc:
            return Verdict(target.image, problem=exc.message)
        timeout = options.timeout_s or TIMEOUT_S[accel.name]
        results: list[BootResult] = []
        for n in range(1, BOOTS + 1):
            spec = BootSpec(overlay, accel.name, options.memory_mb, CPUS[accel.name],
                            work / f"boot{n}-serial.log", sockets / f"qmp{n}.sock", free_port())
            log.say(f"boot {n} of {target.image.name} (127.0.0.1:{spec.host_port} -> :8080)")
            result = Boot(runner, spec, f"boot {n}", log.say, log.warn).run(
                timeout, options.shutdown_timeout_s)
            results.append(result)
            if result.problem is not None:
                kept = keep_logs(work, target.image)
                return Verdict(target.image, tuple(results), f"boot {n}: {result.problem}",
                               kept / f"{target.image.name}.{spec.serial_log.name}")
        keep_logs(work, target.image)  # a PASS keeps them too: how each power-off went
    return Verdict(target.image, tuple(results))


def make_overlay(target: Target, work: Path, runner: Runner) -> Path:
    disk, fmt = target.image, target.kind
    if target.kind == "ova":
        assert target.member is not None
        log.say(f"extracting {target.member} from {target.image.name}")
        disk, fmt = extract_member(target.image, target.member, work), "vmdk"
        check_format(runner, disk, fmt)
    overlay = work / "overlay.qcow2"
    runner.run(overlay_argv(disk, fmt, overlay), log="qemu-img")
    return overlay


@contextmanager
def sigterm_as_interrupt():
    """CI cancels a job with SIGTERM: stop QEMU and clean up as for Ctrl-C."""
    def handler(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(images: list[Path] | None, options: Options) -> int:
    """Test each image (default: every deliverable in out/); 0 only if all pass."""
    paths = images or default_images(out_root())
    targets = prepare(paths, Runner(echo=log.detail))
    accel = accelerator()
    log.say(f"accelerator: {accel.name} ({accel.reason})")
    verdicts = []
    with sigterm_as_interrupt():
        try:
            for target in targets:
                log.say(f"test-image: {target.image}")
                verdicts.append(check_target(target, options, accel))
                print(verdicts[-1].line(), flush=True)
        except KeyboardInterrupt:
            log.error("test-image interrupted: QEMU stopped, temporary overlay removed")
            return 130
    return 0 if all(v.passed for v in verdicts) else 1
