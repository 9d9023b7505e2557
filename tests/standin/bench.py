"""`make bench`: what the pipeline costs, from one run on the offline stand-in.

In a fresh build/bench/ (its own build and out folders; build/ and out/ are never touched,
cache/ is shared: downloads, container images, the build key and the stand-in itself, whose
own build is cached and never part of "cold"), with the stand-in served as for `make demo`:

1. cold: `pipeline.py build --locked` into the empty build folder; per stage the "seconds"
   of its stamp.json, and the wall time of the whole command;
2. no-op: the same command again, everything up to date; its wall time, the ratio to cold,
   and per stage its "warm" time: the stage's skip check (key and outputs checked), timed
   from the previous stage's `==> ...` line to this stage's `up to date, skipped` line
   (the first stage's also holds the interpreter start, the recipe and the lock check);
3. the remaster stage against xorriso repacking the same base ISO with the same new files
   (taken from the remastered ISO, so xorriso only writes: a lower bound for any repack);
4. sizes: every .tcz on the ISO's /cde/optional, the ISO, Packer's qcow2, out/'s qcow2 and OVA
   (and the OVA against the compressed disk it carries);
5. boot-to-ready: `pipeline.py test-image` of the exported qcow2 (two boots), against a bare
   boot of the same image, with no extension or service (tests/standin/bench_boot.py), in
   ROUNDS rounds of both, so that the machine's drift falls on both; per boot the median,
   and the timeline (its APPLIANCE-PHASE lines, appliance/vm/timeline.py) of the round
   whose first boot is the median;
6. the same boot measures for a frugal install: its own cold build (tests/standin/frugal.toml)
   in build/bench/frugal/, used for the boot rows only;
7. `make test`'s wall time on its last run, from the junit XML it writes (build/test-results.xml).

The ratios are the point (absolute times are noisy): no-op / cold, Packer overhead / packer
stage, remaster / xorriso, OVA / payload, boot-to-ready / bare boot.
Prints markdown tables and the machine it ran on, and writes both to build/bench/bench.md;
`--update-readme` also puts them into README.md's Performance section, between its
`<!-- bench:begin -->` and `<!-- bench:end -->` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.engine import outputs_of
from appliance.errors import PipelineError
from appliance.paths import REPO, build_root
from appliance.run import Result, Runner
from appliance.stages.export.release_manifest import stage_timings
from appliance.stages.order import STAGE_NAMES
from appliance.stages.remaster import stage as iso_remaster
from appliance.vm.timeline import Phase
from tests.standin import bench_boot, mirror, releases
from tests.standin.demo import build_argv, mirror_served, registry_served
from tests.standin.server import lock_argv

# `==> fetch: up to date, skipped`, `==> kernel: nothing to do (...)` (appliance/engine.py)
SKIP_LINE = re.compile(r"^==> (?P<stage>[\w-]+): (?:up to date, skipped|nothing to do\b)")
# `test-image: PASS <image> (boot 1: 93.4 s, boot 2: 71.0 s)` (appliance/vm/image_boot.py)
BOOT_TIME = re.compile(r"\bboot (\d+): (\d+(?:\.\d+)?) s\b")
ACCEL_LINE = re.compile(r"^==> accelerator: (\w+)")
# What the remaster stage writes onto the base ISO (appliance/stages/remaster/stage.py).
CHANGED = (iso_remaster.CFG, *iso_remaster.OURS, "/cde")
MODES = ("traditional", "frugal")
# Boot rounds per install mode (test-image's two boots and a bare boot each): single boots
# on this shared machine differ by 10-15 % and more (docs/decisions.md#boot-to-ready).
ROUNDS = 3
JUNIT = REPO / "build" / "test-results.xml"  # written by `make test` (Makefile)
README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


class BenchError(PipelineError):
    """A benchmark step failed; the table would be wrong, so there is none."""


@dataclass
class Report:
    """The measurements; `rows()` turns them into the table."""

    cold: dict[str, float] = field(default_factory=dict)  # stage -> stamp seconds
    warm: dict[str, float] = field(default_factory=dict)  # stage -> skip check seconds
    cold_wall: float = 0.0
    noop_wall: float = 0.0
    remaster_s: float = 0.0
    xorriso_s: float = 0.0
    sizes: list[tuple[str, int]] = field(default_factory=list)
    # mode -> per round, test-image's seconds per boot
    boots: dict[str, list[list[float]]] = field(default_factory=dict)
    bare: dict[str, list[float]] = field(default_factory=dict)  # mode -> per round, seconds
    timelines: dict[str, list[list[Phase]]] = field(default_factory=dict)
    accel: str = "?"
    packer_phases: dict[str, float] = field(default_factory=dict)  # build.json "phases"
    ova_bytes: int = 0
    payload_bytes: int = 0  # the compressed .vmdk inside the OVA
    frugal_cold_wall: float = 0.0
    test_run: tuple[float, str] | None = None  # `make test`: seconds, when

    def rows(self) -> list[tuple[str, str]]:
        rows = [(f"stage {s}: cold / warm", f"{seconds(self.cold.get(s))} / "
                 f"{seconds(self.warm.get(s))}") for s in STAGE_NAMES]
        rows += [
            ("cold build, wall (`pipeline.py build --locked`, empty build folder)",
             seconds(self.cold_wall)),
            ("no-op rebuild, wall (everything up to date)", seconds(self.noop_wall)),
            ("no-op / cold", ratio_text(self.noop_wall, self.cold_wall)),
            ("remaster stage (pycdlib, cold)", seconds(self.remaster_s)),
            ("xorriso repack of the same ISO, same new files", seconds(self.xorriso_s)),
            ("remaster / xorriso", ratio_text(self.remaster_s, self.xorriso_s)),
        ]
        rows += self.packer_rows()
        rows += [(f"size: {name}", size_text(n)) for name, n in self.sizes]
        if self.ova_bytes and self.payload_bytes:
            rows.append(("OVA / its compressed disk (.vmdk payload)",
                         ratio_text(self.ova_bytes, self.payload_bytes)))
        for mode in MODES:
            rows += self.boot_rows(mode)
        rows.append(self.test_row())
        return rows

    def packer_rows(self) -> list[tuple[str, str]]:
        """Packer's own phases against the packer stage's wall time: the rest is ours."""
        wall = self.cold.get("packer")
        if wall is None or not self.packer_phases:
            return []
        overhead = packer_overhead(wall, self.packer_phases)
        return [("packer stage: Packer's phases (build.json) / the rest",
                 f"{seconds(wall - overhead)} / {seconds(overhead)}"),
                ("packer-stage overhead / stage wall", ratio_text(overhead, wall))]

    def boot_rows(self, mode: str) -> list[tuple[str, str]]:
        rows = []
        runs = self.bare.get(mode)
        bare = statistics.median(runs) if runs else None
        if runs:
            rows.append((f"bare boot, {mode} ({self.accel}; the image with no extension or "
                         f"service, to the end of tc-config; {spread_label(runs)})",
                         spread(runs)))
        rounds = self.boots.get(mode, [])
        for n, times in enumerate(zip(*rounds, strict=True), 1):
            rows.append((f"boot-to-ready, boot {n}, {mode} ({self.accel}; "
                         f"{spread_label(times)})", spread(times)))
            if bare is not None:
                rows.append((f"boot-to-ready / bare, boot {n}, {mode}",
                             ratio_text(statistics.median(times), bare)))
        if mode == "frugal" and self.frugal_cold_wall:
            rows.append(("cold build, wall, frugal (built for the boot rows only)",
                         seconds(self.frugal_cold_wall)))
        return rows

    def test_row(self) -> tuple[str, str]:
        if self.test_run is None:
            return ("`make test`, wall (last run)", f"- (no {JUNIT.relative_to(REPO)})")
        wall, when = self.test_run
        return (f"`make test`, wall (last run, {when})", seconds(wall))


# --- pure parts (tests/unit/test_bench.py) --------------------------------------------------

def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def ratio_text(part: float, whole: float) -> str:
    value = ratio(part, whole)
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}x"


def size_text(nbytes: int) -> str:
    if nbytes < 1024 * 1024:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / (1024 * 1024):.1f} MiB"


def packer_overhead(stage_s: float, phases: dict[str, float]) -> float:
    """The packer stage's seconds that are none of Packer's phases (rendering, the disk
    check, the moves): its wall time minus what Packer reports."""
    return max(stage_s - sum(phases.values()), 0.0)


def ova_payload(ova: Path) -> tuple[int, int]:
    """(the OVA's bytes, the bytes of the .vmdk it carries); (size, 0) without one."""
    with tarfile.open(ova, "r:") as tar:
        vmdks = [m.size for m in tar.getmembers() if m.name.lower().endswith(".vmdk")]
    return ova.stat().st_size, sum(vmdks)


def junit_run(xml_text: str) -> tuple[float, str] | None:
    """(seconds, timestamp) of the pytest run a junit XML describes; None if unreadable."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    try:
        wall = float(suite.get("time", ""))
    except ValueError:
        return None
    return wall, suite.get("timestamp", "?")[:16].replace("T", " ")


def readme_with(readme: str, text: str) -> str:
    """README with `text` between the bench markers (both must be there, in order)."""
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        raise BenchError(f"README.md: no {README_BEGIN} ... {README_END} block to rewrite",
                         "put both markers around the Performance table")
    return f"{readme[:begin + len(README_BEGIN)]}\n{text.strip()}\n{readme[end:]}"


def timeline_tables(report: Report) -> list[str]:
    """Per install mode, its boots' timelines side by side (bench_boot.timeline_rows)."""
    out = []
    for mode in MODES:
        boots = report.timelines.get(mode)
        if not boots:
            continue
        header = ["phase", *(f"boot {n}" for n in range(1, len(boots) + 1))]
        out += [f"Boot timeline, {mode} install: seconds since the kernel started (+ since "
                "the previous phase), from the APPLIANCE-PHASE lines of test-image's serial "
                "logs (the round whose first boot is the median).", "",
                bench_boot.markdown(header, bench_boot.timeline_rows(boots)), ""]
    return out


def markdown_table(rows: list[tuple[str, str]]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name.replace('|', '/')} | {value} |" for name, value in rows]
    return "\n".join(lines)


def skip_times(events: list[tuple[float, str]], start: float) -> dict[str, float]:
    """Per stage, the seconds from the previous stage's skip line (or `start`) to its own."""
    result: dict[str, float] = {}
    last = start
    for when, line in events:
        m = SKIP_LINE.match(line)
        if m:
            result[m["stage"]] = when - last
            last = when
    return result


def boot_times(output: str) -> list[float]:
    """The boot seconds of test-image's PASS line; [] without one."""
    for line in output.splitlines():
        if line.startswith("test-image: PASS "):
            return [float(s) for _n, s in BOOT_TIME.findall(line)]
    return []


def accelerator_of(output: str) -> str | None:
    for line in output.splitlines():
        m = ACCEL_LINE.match(line)
        if m:
            return m[1]
    return None


def found_paths(lsd_output: str) -> set[str]:
    """The paths `xorriso -lsd` listed (found ones are echoed quoted; missing ones warned)."""
    return {line.strip().strip("'") for line in lsd_output.splitlines()
            if line.strip().startswith("'/")}


def machine_text(cpuinfo: str, meminfo: str, cores: int, kernel: str, os_name: str,
                 accel: str, date: str) -> str:
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    kib = next((int(line.split()[1]) for line in meminfo.splitlines()
                if line.startswith("MemTotal:")), 0)
    return (f"{model}, {cores} cores, {kib / (1024 * 1024):.0f} GiB RAM, {os_name}, "
            f"kernel {kernel}, accelerator {accel}, {date}")


# --- measuring ------------------------------------------------------------------------------

def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine(accel: str) -> str:
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        os_name = platform.system()
    return machine_text(read("/proc/cpuinfo"), read("/proc/meminfo"), os.cpu_count() or 0,
                        platform.release(), os_name, accel,
                        datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def timed_run(runner: Runner, argv: list[str], env: dict[str, str | None]
              ) -> tuple[Result, list[tuple[float, str]], float]:
    """Run argv (streamed, must succeed); (result, every line with its arrival time, start)."""
    events: list[tuple[float, str]] = []
    start = time.monotonic()
    result = runner.run(argv, env=env, stream=True,
                        on_line=lambda line: events.append((time.monotonic(), line)))
    return result, events, start


def xorriso_repack(runner: Runner, base: Path, remastered: Path, work: Path) -> float:
    """Seconds xorriso takes to write `base` with the files the remaster stage changed,
    extracted beforehand from `remastered` (boot records replayed from the base)."""
    files = work / "files"
    files.mkdir(parents=True)
    listed = runner.run(["xorriso", "-indev", remastered, "-lsd", *CHANGED], log="xorriso")
    present = [p for p in CHANGED if p in found_paths(listed.output)]
    extract = [arg for p in present for arg in ("-extract", p, f"{files}{p}")]
    runner.run(["xorriso", "-osirrox", "on", "-indev", remastered, *extract], log="xorriso")
    maps = [arg for p in present for arg in ("-map", f"{files}{p}", p)]
    repack = runner.run(["xorriso", "-indev", base, "-outdev", work / "repack.iso",
                         "-boot_image", "any", "replay", *maps], log="xorriso")
    return repack.duration


def sizes(cde: Path, build: Path) -> list[tuple[str, int]]:
    tczs = sorted(cde.glob("optional/*.tcz"))
    found = [(p.name, p.stat().st_size) for p in tczs]
    found.append((f"all {len(tczs)} .tcz on /cde/optional", sum(n for _p, n in found)))
    iso = outputs_of(build, "remaster")["iso"]
    found.append((f"live ISO {iso.name}", iso.stat().st_size))
    disk = outputs_of(build, "packer")["qcow2"]
    found.append((f"Packer's qcow2 {disk.name} (uncompressed)", disk.stat().st_size))
    exported = outputs_of(build, "export")
    for key, what in (("out/qcow2", "exported qcow2 (compressed)"), ("out/ova", "OVA")):
        if key in exported:
            found.append((f"{what} {exported[key].name}", exported[key].stat().st_size))
    return found


def boot(runner: Runner, image: Path, env: dict[str, str | None]) -> tuple[list[float], str]:
    result = runner.run([sys.executable, str(REPO / "pipeline.py"), "test-image", str(image)],
                        env=env, stream=True, check=False)
    times = boot_times(result.output)
    if result.returncode != 0 or not times:
        fail = [ln for ln in result.output.splitlines() if ln.startswith("test-image: FAIL")]
        raise BenchError(f"test-image of {image} did not pass (exit {result.returncode})"
                         + (f": {fail[-1]}" if fail else ""))
    return times, accelerator_of(result.output) or "?"


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` for the block (the stand-in's overlay and lock go to
    build_root()/standin, and every child inherits the bench's build and out folders)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def boot_section(runner: Runner, build: Path, mode: str, report: Report, work: Path) -> None:
    """ROUNDS rounds of test-image of the build's qcow2 (timelines from its kept serial logs)
    and a bare boot of the same image (a raw copy that its bootloader starts bare)."""
    image = outputs_of(build, "export")["out/qcow2"]
    kept = build / "logs" / "test-image"
    raw, append = bench_boot.bare_disk(runner, image, work)
    say(f"bare boot ({mode}): the image's bootloader with its base initramfs and `{append}`")
    timelines = []
    for n in range(1, ROUNDS + 1):
        say(f"boot round {n} of {ROUNDS} ({mode}): test-image, then a bare boot")
        times, report.accel = boot(runner, image, {})
        report.boots.setdefault(mode, []).append(times)
        timelines.append(bench_boot.serial_timelines(kept, image))
        report.bare.setdefault(mode, []).append(
            bench_boot.bare_boot(runner, raw, report.accel, work))
    report.timelines[mode] = timelines[median_index([t[0] for t in report.boots[mode]])]
    raw.unlink()


def median_index(values: list[float]) -> int:
    """The index of the median of `values` (of the lower middle one for an even count)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(values) - 1) // 2]


def spread_label(values) -> str:
    return f"median of {len(values)}" if len(values) > 1 else "one run"


def spread(values) -> str:
    """The median, then the range when there is more than one value."""
    if len(values) == 1:
        return seconds(values[0])
    return f"{seconds(statistics.median(values))} ({seconds(min(values))} to " \
           f"{seconds(max(values))})"


def frugal_section(root: Path, argv: list[str], runner: Runner, report: Report) -> None:
    build = root / "frugal" / "build"
    build.mkdir(parents=True)
    with environ({"APPLIANCE_BUILD": str(build), "APPLIANCE_OUT": str(root / "frugal" / "out")}):
        cold, _events, _start = timed_run(runner, argv, {})
        report.frugal_cold_wall = cold.duration
        boot_section(runner, build, "frugal", report, root / "frugal" / "bare")


def measure(root: Path, port: int, extra: list[str], runner: Runner,
            frugal: bool = True) -> Report:
    build, report = root / "build", Report()
    built = mirror.build_all(port=port)
    say(f"stand-in ready in {sum(built.timings.values()):.1f} s (cached in cache/standin/; "
        "not part of any number below)")
    lock = mirror.standin_build_dir() / "standin.lock"
    with registry_served(), mirror_served(built.mirror, port):
        overlay = mirror.recipe_overlay(built.kernel.release, releases.versions(runner), port)
        runner.run(lock_argv(overlay, lock), stream=True)
        argv = build_argv(overlay, lock, "traditional", extra)
        say("1/6 cold build into the empty build folder")
        cold, _events, _start = timed_run(runner, argv, {})
        report.cold_wall = cold.duration
        report.cold = stage_timings(build, STAGE_NAMES)
        report.packer_phases = packer_phases(build)
        say("2/6 no-op rebuild (the same command again)")
        noop, events, start = timed_run(runner, argv, {})
        report.noop_wall, report.warm = noop.duration, skip_times(events, start)
        say("3/6 remaster stage vs an xorriso repack of the same ISO")
        report.remaster_s = report.cold.get("remaster", 0.0)
        report.xorriso_s = xorriso_repack(runner, outputs_of(build, "fetch")["iso"],
                                          outputs_of(build, "remaster")["iso"], root / "xorriso")
        say("4/6 sizes")
        report.sizes = sizes(root / "xorriso" / "files" / "cde", build)
        if "out/ova" in outputs_of(build, "export"):
            report.ova_bytes, report.payload_bytes = ova_payload(
                outputs_of(build, "export")["out/ova"])
        say(f"5/6 boot-to-ready of the exported qcow2 and a bare boot, {ROUNDS} rounds")
        boot_section(runner, build, "traditional", report, root / "bare")
        if frugal:
            say("6/6 frugal install: a cold build of it, then the same boots")
            frugal_section(root, build_argv(overlay, lock, "frugal", extra), runner, report)
        else:
            say("6/6 frugal install: skipped (--no-frugal)")
    report.test_run = junit_run(read(str(JUNIT))) if JUNIT.is_file() else None
    return report


def packer_phases(build: Path) -> dict[str, float]:
    try:
        data = json.loads(outputs_of(build, "packer")["build.json"].read_text())
        return {str(k): float(v) for k, v in data.get("phases", {}).items()}
    except (OSError, KeyError, ValueError, TypeError, AttributeError):
        return {}


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def bench(port: int, extra: list[str], frugal: bool = True, update_readme: bool = False) -> int:
    root = build_root() / "bench"
    shutil.rmtree(root, ignore_errors=True)
    (root / "build").mkdir(parents=True)
    runner = Runner(log_dir=root / "logs", echo=lambda line: print(line, flush=True))
    with environ({"APPLIANCE_BUILD": str(root / "build"), "APPLIANCE_OUT": str(root / "out")}):
        report = measure(root, port, extra, runner, frugal)
    text = "\n".join([
        f"Machine: {machine(report.accel)}", "",
        "cold: an empty build folder, downloads and the stand-in cached; warm: the stage's "
        "skip check in the no-op rebuild; boot-to-ready: QEMU start to APPLIANCE-READY "
        "(then /healthz 200); bare boot: QEMU start to the stand-in's end of tc-config "
        "(`STANDIN-BOOT:`, a stand-in-only line) on test-image's VM (its disk bus, its NIC), "
        "booting a copy of the same image through its own bootloader with only the base "
        "initramfs, the image's Tiny Core codes (frugal: noembed, waitusb=, tce=) and "
        "`base norestore` (tests/standin/bench_boot.py).", "",
        markdown_table(report.rows()), "", *timeline_tables(report)])
    (root / "bench.md").write_text(text)
    print(f"\n{text}\nbench: written to {root / 'bench.md'}", flush=True)
    if update_readme:
        readme = REPO / "README.md"
        readme.write_text(readme_with(readme.read_text(encoding="utf-8"), text),
                          encoding="utf-8")
        print(f"bench: {readme} Performance table rewritten", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.standin.bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=mirror.default_port(),
                    help=f"the stand-in server's port (default {mirror.DEFAULT_PORT})")
    ap.add_argument("--no-frugal", action="store_true",
                    help="skip the frugal install's build and boots")
    ap.add_argument("--update-readme", action="store_true",
                    help="also rewrite README.md's Performance table with the result")
    args, extra = ap.parse_known_args(argv)
    try:
        return bench(args.port, extra, not args.no_frugal, args.update_readme)
    except PipelineError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; its children and the stand-in servers are stopped",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
