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
4. sizes: every .tcz on the ISO's /cde/optional, the ISO, Packer's qcow2, out/'s qcow2 and OVA;
5. boot-to-ready: `pipeline.py test-image` of the exported qcow2 (two boots).

Prints one markdown table and the machine it ran on, and writes both to build/bench/bench.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import sys
import time
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
from tests.standin import mirror, releases
from tests.standin.demo import build_argv, mirror_served, registry_served
from tests.standin.server import lock_argv

# `==> fetch: up to date, skipped`, `==> kernel: nothing to do (...)` (appliance/engine.py)
SKIP_LINE = re.compile(r"^==> (?P<stage>[\w-]+): (?:up to date, skipped|nothing to do\b)")
# `test-image: PASS <image> (boot 1: 93 s, boot 2: 71 s)` (appliance/vm/image_boot.py)
BOOT_TIME = re.compile(r"\bboot (\d+): (\d+(?:\.\d+)?) s\b")
ACCEL_LINE = re.compile(r"^==> accelerator: (\w+)")
# What the remaster stage writes onto the base ISO (appliance/stages/remaster/stage.py).
CHANGED = (iso_remaster.CFG, *iso_remaster.OURS, "/cde")


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
    boots: list[float] = field(default_factory=list)
    accel: str = "?"

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
        rows += [(f"size: {name}", size_text(n)) for name, n in self.sizes]
        rows += [(f"boot-to-ready, boot {n} ({self.accel})", f"{s:g} s")  # whole seconds
                 for n, s in enumerate(self.boots, 1)]
        return rows


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


def measure(root: Path, port: int, extra: list[str], runner: Runner) -> Report:
    build, report = root / "build", Report()
    built = mirror.build_all(port=port)
    say(f"stand-in ready in {sum(built.timings.values()):.1f} s (cached in cache/standin/; "
        "not part of any number below)")
    lock = mirror.standin_build_dir() / "standin.lock"
    with registry_served(), mirror_served(built.mirror, port):
        overlay = mirror.recipe_overlay(built.kernel.release, releases.versions(runner), port)
        runner.run(lock_argv(overlay, lock), stream=True)
        argv = build_argv(overlay, lock, "traditional", extra)
        say("1/5 cold build into the empty build folder")
        cold, _events, _start = timed_run(runner, argv, {})
        report.cold_wall = cold.duration
        report.cold = stage_timings(build, STAGE_NAMES)
        say("2/5 no-op rebuild (the same command again)")
        noop, events, start = timed_run(runner, argv, {})
        report.noop_wall, report.warm = noop.duration, skip_times(events, start)
        say("3/5 remaster stage vs an xorriso repack of the same ISO")
        report.remaster_s = report.cold.get("remaster", 0.0)
        report.xorriso_s = xorriso_repack(runner, outputs_of(build, "fetch")["iso"],
                                          outputs_of(build, "remaster")["iso"], root / "xorriso")
        say("4/5 sizes")
        report.sizes = sizes(root / "xorriso" / "files" / "cde", build)
        say("5/5 boot-to-ready of the exported qcow2 (test-image: two boots)")
        report.boots, report.accel = boot(runner, outputs_of(build, "export")["out/qcow2"], {})
    return report


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def bench(port: int, extra: list[str]) -> int:
    root = build_root() / "bench"
    shutil.rmtree(root, ignore_errors=True)
    (root / "build").mkdir(parents=True)
    runner = Runner(log_dir=root / "logs", echo=lambda line: print(line, flush=True))
    with environ({"APPLIANCE_BUILD": str(root / "build"), "APPLIANCE_OUT": str(root / "out")}):
        report = measure(root, port, extra, runner)
    text = "\n".join([
        f"Machine: {machine(report.accel)}", "",
        "cold: an empty build folder, downloads and the stand-in cached; warm: the stage's "
        "skip check in the no-op rebuild; boot-to-ready: QEMU start to APPLIANCE-READY and "
        "/healthz 200.", "",
        markdown_table(report.rows()), ""])
    (root / "bench.md").write_text(text)
    print(f"\n{text}\nbench: written to {root / 'bench.md'}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.standin.bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=mirror.default_port(),
                    help=f"the stand-in server's port (default {mirror.DEFAULT_PORT})")
    args, extra = ap.parse_known_args(argv)
    try:
        return bench(args.port, extra)
    except PipelineError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; its children and the stand-in servers are stopped",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
