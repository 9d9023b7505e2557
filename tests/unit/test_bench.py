"""`make bench` (tests/standin/bench.py): its pure parts. No timing is asserted anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.engine import STAMP
from tests.standin import bench

PASS = ("test-image: PASS /x/out/tc-appliance-0.1.0.qcow2 "
        "(boot 1: 93 s, boot 2: 71 s; 1 ACPI power-off(s) ignored, QEMU stopped)")


def test_boot_times_come_from_the_pass_line():
    output = "\n".join(["==> accelerator: tcg (KVM unusable)", "    boot 1: 5 s noise", PASS])
    assert bench.boot_times(output) == [93.0, 71.0]
    assert bench.accelerator_of(output) == "tcg"


def test_no_pass_line_means_no_boot_times():
    fail = "test-image: FAIL /x/a.qcow2: boot 2: timed out; serial log kept at build/logs/x"
    assert bench.boot_times(fail) == []
    assert bench.accelerator_of(fail) is None


def test_skip_times_run_from_the_previous_skip_line():
    events = [(10.5, "+ something"), (11.0, "==> fetch: up to date, skipped"),
              (11.25, "==> kernel: nothing to do (kernel.modules is empty)"),
              (12.0, "==> remaster: up to date, skipped"), (12.5, "==> finished")]
    assert bench.skip_times(events, start=10.0) == {"fetch": 1.0, "kernel": 0.25,
                                                   "remaster": 0.75}


def test_a_stage_that_runs_has_no_warm_time():
    events = [(1.0, "==> fetch: building (no previous build)"), (2.0, "==> fetch: done in 1 s")]
    assert bench.skip_times(events, start=0.0) == {}


def write_stamp(build: Path, stage: str, stamp: dict) -> None:
    (build / stage).mkdir(parents=True)
    (build / stage / STAMP).write_text(json.dumps(stamp))


def test_cold_seconds_come_from_each_stamp(tmp_path: Path):
    write_stamp(tmp_path, "fetch", {"seconds": 0.4, "outputs": {}})
    write_stamp(tmp_path, "packer", {"seconds": 144.9, "outputs": {}})
    write_stamp(tmp_path, "export", {"outputs": {}})  # an old stamp without seconds
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / STAMP).write_text("{not json")
    report = bench.Report(cold=bench.stage_timings(tmp_path, bench.STAGE_NAMES))
    assert report.cold == {"fetch": 0.4, "packer": 144.9}
    rows = dict(report.rows())
    assert rows["stage packer: cold / warm"] == "144.9 s / -"
    assert rows["stage export: cold / warm"] == "- / -"


@pytest.mark.parametrize(("part", "whole", "expected"), [
    (2.0, 200.0, "0.010"), (0.7, 0.35, "2.0x"), (1.0, 0.0, "-")])
def test_ratios(part, whole, expected):
    assert bench.ratio_text(part, whole) == expected


def test_ratio_of_nothing_is_none():
    assert bench.ratio(3.0, 0.0) is None
    assert bench.ratio(3.0, 4.0) == pytest.approx(0.75)


def test_table_is_markdown_with_one_row_per_metric():
    report = bench.Report(cold={"remaster": 0.5}, warm={"remaster": 0.02}, cold_wall=200.0,
                          noop_wall=2.0, remaster_s=0.5, xorriso_s=0.25,
                          sizes=[("faasd.tcz", 8192), ("live ISO a.iso", 80 * 1024 * 1024)],
                          boots=[93.0, 71.0], accel="tcg")
    table = bench.markdown_table(report.rows()).splitlines()
    assert table[:2] == ["| metric | value |", "|---|---|"]
    assert all(line.startswith("| ") and line.endswith(" |") and line.count("|") == 3
               for line in table[2:])
    rows = dict(report.rows())
    assert rows["stage remaster: cold / warm"] == "0.50 s / 0.02 s"
    assert rows["no-op / cold"] == "0.010"
    assert rows["remaster / xorriso"] == "2.0x"
    assert rows["size: faasd.tcz"] == "8.0 KiB"
    assert rows["size: live ISO a.iso"] == "80.0 MiB"
    assert rows["boot-to-ready, boot 2 (tcg)"] == "71 s"


def test_a_pipe_in_a_metric_name_cannot_break_the_table():
    assert bench.markdown_table([("a|b", "1 s")]).splitlines()[-1] == "| a/b | 1 s |"


def test_xorriso_lsd_lists_only_what_it_found():
    output = ("xorriso 1.5.4 : RockRidge filesystem manipulator\n"
              "'/boot/appliance.gz'\n'/cde'\n"
              "xorriso : WARNING : Not found in ISO image: '/mydata.tgz'\n")
    assert bench.found_paths(output) == {"/boot/appliance.gz", "/cde"}


def test_machine_line():
    text = bench.machine_text("processor\t: 0\nmodel name\t: AMD EPYC\n",
                              "MemTotal:       24576000 kB\n", 2, "6.1.0", "Debian 12",
                              "tcg", "2025-01-01 10:00 UTC")
    assert text == ("AMD EPYC, 2 cores, 23 GiB RAM, Debian 12, kernel 6.1.0, "
                    "accelerator tcg, 2025-01-01 10:00 UTC")
