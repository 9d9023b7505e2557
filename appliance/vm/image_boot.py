"""`pipeline.py test-image [IMAGE...]`: boot a deliverable twice, as a user would import it.

The deliverable itself is never booted: each test runs on a fresh copy-on-write qcow2
overlay in a temporary folder (an OVA's disk is first extracted there). The same overlay
boots twice, with a clean ACPI power-off in between, because state that must survive a
reboot is where installs break (docs/architecture.md#tests). Serial logs of a failed test are
kept in build/logs/test-image/.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance import log, paths, signals
from appliance.errors import PipelineError
from appliance.paths import build_root, out_root
from appliance.run import Runner
from appliance.vm import qemu_img, seed_iso, timeline
from appliance.vm.boot_check import DISK_BUSES, NICS, Boot, BootResult, BootSpec, free_port
from appliance.vm.qemu import Accel, accelerator

KINDS = {".qcow2": "qcow2", ".vmdk": "vmdk", ".ova": "ova"}
DEFAULT_MEMORY_MB = 2048
# QEMU start -> a marker, per boot: more than the boot plus the recipe's ready_timeout (600 s
# by default), so a service that hangs is named by its APPLIANCE-NOT-READY, not by our timeout.
TIMEOUT_S = {"tcg": 1200.0, "kvm": 900.0}
CPUS = {"tcg": 1, "kvm": 2}  # 2 vCPUs under TCG hung inside runc once (docs/decisions.md#one-vcpu-under-tcg)
SHUTDOWN_TIMEOUT_S = 120.0
BOOTS = 2
HINT = "test-image boots a .qcow2 or .vmdk disk, or the .vmdk inside an .ova"


@dataclass(frozen=True)
class Variant:
    """The virtual hardware one image is booted on: a disk bus and a NIC."""
    disk_bus: str = "ide"
    nic: str = "e1000"

    def __str__(self) -> str:
        return f"{self.disk_bus}+{self.nic}"


DEFAULT_VARIANTS = (Variant(),)  # what the OVF describes; one pass keeps CI short


def variants(buses: list[str], nics: list[str], matrix: bool) -> tuple[Variant, ...]:
    """Every chosen bus with every chosen NIC (`matrix`: all of both), in a fixed order."""
    if matrix:
        buses, nics = list(DISK_BUSES), list(NICS)
    buses, nics = buses or ["ide"], nics or ["e1000"]
    return tuple(Variant(b, n) for b in dict.fromkeys(buses) for n in dict.fromkeys(nics))


@dataclass(frozen=True)
class Options:
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float | None = None  # None: by accelerator (TIMEOUT_S)
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS
    boots: int = BOOTS
    cdroms: tuple[Path, ...] = ()  # first-boot CDs, attached on every boot of every variant


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
    variant: Variant | None = None  # None: the default hardware, not named in the line

    @property
    def passed(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        what = f"{self.image} [{self.variant}]" if self.variant else f"{self.image}"
        if self.problem is not None:
            kept = f"; serial log kept at {self.serial_log}" if self.serial_log else ""
            return f"test-image: FAIL {what}: {self.problem}{kept}"
        times = ", ".join(f"boot {n}: {b.seconds:.1f} s" for n, b in enumerate(self.boots, 1))
        hard = sum(b.hard_stop for b in self.boots)
        note = f"; {hard} ACPI power-off(s) ignored, QEMU stopped" if hard else ""
        return f"test-image: PASS {what} ({times}{note})"

    def timeline_lines(self) -> list[str]:
        """Per boot, its APPLIANCE-PHASE breakdown (appliance/vm/timeline.py); on a failed
        boot it shows how far the boot got. A boot that printed none gets no line."""
        lines = []
        for n, boot in enumerate(self.boots, 1):
            phases = list(boot.phases)
            if not phases:
                continue
            wrong = timeline.problems(phases)
            note = f" (timeline problems: {'; '.join(wrong)})" if wrong else ""
            lines.append(f"test-image: boot {n} timeline: {timeline.breakdown(phases)}{note}")
        return lines


# --- which images, and what they are -------------------------------------------------------

def default_images(out: Path) -> list[Path]:
    """The deliverables out/manifest.json lists (the last export's): qcow2, then OVA.

    Not a glob of out/: a file left there by hand or by an older export must not be tested
    in place of what the last export made."""
    manifest = out / "manifest.json"
    hint = "run `make image` first, or name an image: `pipeline.py test-image PATH`"
    try:
        outputs = json.loads(manifest.read_text(encoding="utf-8")).get("outputs")
        names = [o["name"] for o in outputs]
    except FileNotFoundError:
        raise PipelineError(f"no image in {out} (no manifest.json from an export)",
                            hint) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PipelineError(f"{manifest}: unreadable ({exc})", hint) from None
    found = [out / n for n in names if isinstance(n, str) and "/" not in n
             and Path(n).suffix in (".qcow2", ".ova")]
    found.sort(key=lambda p: (p.suffix != ".qcow2", p.name))
    if not found:
        raise PipelineError(f"no image in {out}: {manifest.name} lists no .qcow2 or .ova",
                            hint)
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise PipelineError(f"{manifest} lists {missing[0].name}, which is not in {out}",
                            "rerun the export: `python pipeline.py build --force export`")
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


# --- first-boot CDs ----------------------------------------------------------------------

def cd_dir() -> Path:
    return build_root() / "test-image"


def safe_name(name: str, default: str) -> str:
    """`name` as a plain file name: a comma would end QEMU's `-drive file=` value."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or default


def first_boot_cds(seed: Path | None, ovf_env: Path | None) -> tuple[Path, ...]:
    """Build the CDs `--seed DIR` and `--ovf-env FILE` ask for, under build/test-image/.

    Both inputs are checked before either ISO is written: a bad one is one clear error and
    no CD."""
    layouts = []
    if seed is not None:
        name = safe_name(seed.resolve().name, "nocloud")
        name = name if name.endswith("seed") else f"{name}-seed"
        layouts.append((seed_iso.nocloud_layout(seed), f"{name}.iso"))
    if ovf_env is not None:
        name = safe_name(ovf_env.stem, "ovf")
        layouts.append((seed_iso.ovf_env_layout(ovf_env), f"{name}-ovf-env.iso"))
    if not layouts:
        return ()
    paths.claim(build_root())
    cd_dir().mkdir(parents=True, exist_ok=True)
    made = []
    for layout, name in layouts:
        iso = seed_iso.write_iso(layout, cd_dir() / name)
        log.say(f"first-boot CD {iso} (label {layout.label}: "
                f"{', '.join(n for n, _ in layout.files)})")
        made.append(iso)
    return tuple(made)


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
    paths.claim(build_root())
    work = Path(tempfile.mkdtemp(prefix="test-image-", dir=build_root()))
    sockets = Path(tempfile.mkdtemp(prefix="ti-"))  # a unix socket path holds ~108 bytes
    try:
        yield work, sockets
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)


def check_target(target: Target, options: Options, accel: Accel) -> list[Verdict]:
    """One verdict per variant; each variant boots a fresh overlay `options.boots` times."""
    forget_logs(target.image)
    named = options.variants != DEFAULT_VARIANTS
    return [check_variant(target, options, accel, v if named else None)
            for v in options.variants]


def check_variant(target: Target, options: Options, accel: Accel,
                  variant: Variant | None) -> Verdict:
    hw = variant or Variant()
    tag = f"{hw.disk_bus}-{hw.nic}-" if variant else ""
    with scratch() as (work, sockets):
        runner = Runner(log_dir=work, echo=log.detail)
        try:
            overlay = make_overlay(target, work, runner)
        except PipelineError as exc:
            return Verdict(target.image, problem=exc.message, variant=variant)
        timeout = options.timeout_s or TIMEOUT_S[accel.name]
        results: list[BootResult] = []
        for n in range(1, options.boots + 1):
            spec = BootSpec(overlay, accel.name, options.memory_mb, CPUS[accel.name],
                            work / f"{tag}boot{n}-serial.log", sockets / f"qmp{n}.sock",
                            free_port(), hw.disk_bus, hw.nic, options.cdroms)
            log.say(f"boot {n} of {target.image.name} on {hw} "
                    f"(127.0.0.1:{spec.host_port} -> :8080)")
            result = Boot(runner, spec, f"boot {n}", log.say, log.warn).run(
                timeout, options.shutdown_timeout_s)
            results.append(result)
            if result.problem is not None:
                kept = keep_logs(work, target.image)
                return Verdict(target.image, tuple(results), f"boot {n}: {result.problem}",
                               kept / f"{target.image.name}.{spec.serial_log.name}", variant)
        keep_logs(work, target.image)  # a PASS keeps them too: how each power-off went
    return Verdict(target.image, tuple(results), variant=variant)


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


def run(images: list[Path] | None, options: Options) -> int:
    """Test each image (default: every deliverable in out/); 0 only if all pass."""
    paths = images or default_images(out_root())
    targets = prepare(paths, Runner(echo=log.detail))
    accel = accelerator()
    log.say(f"accelerator: {accel.name} ({accel.reason})")
    verdicts = []
    # CI cancels a job with SIGTERM: appliance/signals.py turns it into the same cleanup
    with signals.terminate_as_interrupt():
        try:
            for target in targets:
                log.say(f"test-image: {target.image}")
                for verdict in check_target(target, options, accel):
                    verdicts.append(verdict)
                    print(verdict.line(), flush=True)
                    for line in verdict.timeline_lines():
                        print(line, flush=True)
        except KeyboardInterrupt as exc:
            log.error(f"test-image {signals.describe(exc)}: QEMU stopped, temporary overlay "
                      "removed")
            return signals.exit_status(exc)
    return 0 if all(v.passed for v in verdicts) else 1
