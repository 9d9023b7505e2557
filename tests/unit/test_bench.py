"""`make bench` (tests/standin/bench.py): its pure parts. No timing is asserted anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.engine import STAMP
from appliance.errors import PipelineError
from appliance.vm import boot_check, image_boot, qemu
from appliance.vm.timeline import Phase
from tests.standin import bench, bench_boot

PASS = ("test-image: PASS /x/out/tc-appliance-0.1.0.qcow2 "
        "(boot 1: 93.4 s, boot 2: 71.0 s; 1 ACPI power-off(s) ignored, QEMU stopped)")


def test_boot_times_come_from_the_pass_line():
    output = "\n".join(["==> accelerator: tcg (KVM unusable)", "    boot 1: 5 s noise", PASS])
    assert bench.boot_times(output) == [93.4, 71.0]
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
                          boots={"traditional": [[93.0, 71.0]]}, accel="tcg")
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
    assert rows["boot-to-ready, boot 2, traditional (tcg; one run)"] == "71.0 s"
    assert not any(name.startswith(("bare boot", "boot-to-ready / bare")) for name in rows)
    assert rows["`make test`, wall (last run)"] == "- (no build/test-results.xml)"


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


def test_boot_rows_give_each_boots_median_against_the_bare_boots_median_per_mode():
    report = bench.Report(boots={"traditional": [[60.0, 45.0], [66.0, 40.0], [57.0, 47.0]],
                                 "frugal": [[90.0, 30.0]]},
                          bare={"traditional": [21.0, 20.0, 26.0], "frugal": [30.0]},
                          accel="tcg",
                          frugal_cold_wall=240.0, test_run=(512.3, "2026-12-03 13:00"))
    rows = dict(report.rows())
    # the median of the rounds, then their spread
    assert rows["bare boot, traditional (tcg; the image with no extension or service, to "
                "the end of tc-config; median of 3)"] == "21.0 s (20.0 s to 26.0 s)"
    assert rows["boot-to-ready, boot 1, traditional (tcg; median of 3)"] == \
        "60.0 s (57.0 s to 66.0 s)"
    assert rows["boot-to-ready, boot 2, traditional (tcg; median of 3)"] == \
        "45.0 s (40.0 s to 47.0 s)"
    assert rows["boot-to-ready / bare, boot 1, traditional"] == "2.9x"  # 60 / 21
    assert rows["boot-to-ready / bare, boot 2, traditional"] == "2.1x"  # 45 / 21
    assert rows["bare boot, frugal (tcg; the image with no extension or service, to "
                "the end of tc-config; one run)"] == "30.0 s"
    assert rows["boot-to-ready / bare, boot 1, frugal"] == "3.0x"
    assert rows["boot-to-ready / bare, boot 2, frugal"] == "1.0x"
    assert rows["cold build, wall, frugal (built for the boot rows only)"] == "240.0 s"
    assert rows["`make test`, wall (last run, 2026-12-03 13:00)"] == "512.3 s"
    names = [name for name, _ in report.rows()]
    assert names.index("boot-to-ready, boot 2, traditional (tcg; median of 3)") < names.index(
        "boot-to-ready, boot 1, frugal (tcg; one run)")


@pytest.mark.parametrize(("values", "index"), [([3.0], 0), ([5.0, 1.0, 3.0], 2),
                                               ([4.0, 1.0, 3.0, 2.0], 3), ([2.0, 2.0, 9.0], 1)])
def test_the_timeline_comes_from_the_round_with_the_median_first_boot(values, index):
    assert bench.median_index(values) == index


def test_packer_overhead_is_the_stage_minus_packers_phases():
    phases = {"boot": 20, "ssh": 30, "install": 40, "verify": 40}
    assert bench.packer_overhead(145.0, phases) == pytest.approx(15.0)
    assert bench.packer_overhead(100.0, phases) == 0.0  # rounding never goes negative
    rows = dict(bench.Report(cold={"packer": 145.0}, packer_phases=phases).rows())
    assert rows["packer stage: Packer's phases (build.json) / the rest"] == "130.0 s / 15.0 s"
    assert rows["packer-stage overhead / stage wall"] == "0.103"
    assert "packer-stage overhead / stage wall" not in dict(bench.Report().rows())


def test_ova_against_its_compressed_payload(tmp_path: Path):
    import tarfile
    (tmp_path / "a.ovf").write_text("<Envelope/>")
    (tmp_path / "a-disk1.vmdk").write_bytes(b"x" * 5000)
    with tarfile.open(tmp_path / "a.ova", "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(tmp_path / "a.ovf", "a.ovf")
        tar.add(tmp_path / "a-disk1.vmdk", "a-disk1.vmdk")
    ova, payload = bench.ova_payload(tmp_path / "a.ova")
    assert payload == 5000 and ova == (tmp_path / "a.ova").stat().st_size
    rows = dict(bench.Report(ova_bytes=ova, payload_bytes=payload).rows())
    assert rows["OVA / its compressed disk (.vmdk payload)"] == bench.ratio_text(ova, 5000)


def test_junit_gives_the_last_runs_wall_time():
    xml = ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
           '<testsuite name="pytest" errors="0" failures="0" skipped="2" tests="700" '
           'time="1234.567" timestamp="2026-12-03T12:01:02.123456+00:00" hostname="h">'
           '</testsuite></testsuites>')
    assert bench.junit_run(xml) == (1234.567, "2026-12-03 12:01")
    assert bench.junit_run('<testsuite time="3.5" timestamp="2026-01-01T00:00:00"/>') == (
        3.5, "2026-01-01 00:00")
    assert bench.junit_run("<not xml") is None
    assert bench.junit_run("<testsuites/>") is None
    assert bench.junit_run('<testsuite time="soon"/>') is None


def test_readme_block_is_replaced_between_the_markers():
    readme = "# x\n## Performance\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n## Layout\n"
    new = bench.readme_with(readme, "| metric | value |\n")
    assert new == ("# x\n## Performance\nintro\n<!-- bench:begin -->\n| metric | value |\n"
                   "<!-- bench:end -->\n## Layout\n")
    assert bench.readme_with(new, "| metric | value |") == new
    with pytest.raises(bench.BenchError, match="bench:begin"):
        bench.readme_with("# no markers\n", "x")


BOOT_1 = [Phase("kernel", 1.9), Phase("extensions", 11.2), Phase("images", 30.1,
          "imported=3 present=0"), Phase("ready", 38.0)]
BOOT_2 = [Phase("kernel", 1.8), Phase("extensions", 10.0), Phase("firstboot", 10.5),
          Phase("images", 12.0, "imported=0 present=3"), Phase("ready", 16.0)]


def test_timeline_table_has_a_row_per_phase_and_a_column_per_boot():
    rows = bench_boot.timeline_rows([BOOT_1, BOOT_2])
    assert rows == [
        ["kernel", "1.9", "1.8"],
        ["extensions", "11.2 (+9.3)", "10.0 (+8.2)"],
        ["firstboot", "-", "10.5 (+0.5)"],
        ["images", "30.1 (+18.9) imported=3 present=0", "12.0 (+1.5) imported=0 present=3"],
        ["ready", "38.0 (+7.9)", "16.0 (+4.0)"]]
    table = bench_boot.markdown(["phase", "boot 1", "boot 2"], rows).splitlines()
    assert table[:2] == ["| phase | boot 1 | boot 2 |", "|---|---|---|"]
    assert table[-1] == "| ready | 38.0 (+7.9) | 16.0 (+4.0) |"
    report = bench.Report(timelines={"frugal": [BOOT_1, BOOT_2]})
    text = "\n".join(bench.timeline_tables(report))
    assert text.startswith("Boot timeline, frugal install:") and "traditional" not in text


def test_serial_timelines_read_the_logs_test_image_kept(tmp_path: Path):
    (tmp_path / "a.qcow2.boot1-serial.log").write_text(
        "noise\nAPPLIANCE-PHASE kernel 1.90\nAPPLIANCE-PHASE ready 38.00\nAPPLIANCE-READY\n")
    assert bench_boot.serial_timelines(tmp_path, Path("out/a.qcow2")) == [
        [Phase("kernel", 1.9), Phase("ready", 38.0)], []]


def test_bare_boot_is_test_images_vm_booting_the_disk(tmp_path: Path):
    argv = bench_boot.bare_argv("tcg", tmp_path / "serial.log", tmp_path / "bare.qcow2", 4242)
    # the disk's own bootloader starts it: no -kernel, -initrd or -append
    assert not {"-kernel", "-initrd", "-append"} & set(argv)
    assert argv[argv.index("-m") + 1] == "2048" and argv[argv.index("-smp") + 1] == "1"
    # the same -accel as test-image (TCG's translation cache included): the ratio compares boots
    assert argv[argv.index("-machine") + 1] == "pc"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=64" == qemu.accel_option("tcg")
    # the same hardware as test-image's default variant: Tiny Core probes the same devices
    hardware = image_boot.Variant()
    assert boot_check.disk_argv(hardware.disk_bus, tmp_path / "bare.qcow2") == \
        argv[argv.index("-drive"):argv.index("-drive") + 2]
    assert argv[argv.index("-device") + 1].startswith(boot_check.NICS[hardware.nic] + ",")


# What packer/scripts/install-to-disk.sh writes for a frugal and a traditional install.
FRUGAL_CONF = """# Written by tc-appliance (packer/scripts/install-to-disk.sh), frugal install
SERIAL 0 115200
DEFAULT appliance
PROMPT 0
TIMEOUT 10
LABEL appliance
	KERNEL /boot/vmlinuz64
	INITRD /boot/corepure64.gz,/boot/appliance.gz
	APPEND noembed waitusb=10:UUID=ab-1 tce=UUID=ab-1 noautologin host=x console=tty0 console=ttyS0,115200
"""


def test_a_frugal_bare_boot_keeps_the_base_initramfs_and_the_tinycore_codes():
    conf = bench_boot.bare_extlinux(FRUGAL_CONF).splitlines()
    assert conf[:7] == FRUGAL_CONF.splitlines()[:7]  # the same kernel, label and serial line
    assert conf[7] == "\tINITRD /boot/corepure64.gz"
    assert conf[8] == ("\tAPPEND noembed waitusb=10:UUID=ab-1 tce=UUID=ab-1 "
                       "console=ttyS0,115200 base norestore noautologin")


def test_a_traditional_bare_boot_leaves_the_disk_root_out():
    conf = FRUGAL_CONF.replace("/boot/appliance.gz", "/boot/diskroot.gz").replace(
        "noembed waitusb=10:UUID=ab-1 tce=UUID=ab-1", "root=UUID=cd-2")
    lines = bench_boot.bare_extlinux(conf).splitlines()
    assert lines[7] == "\tINITRD /boot/corepure64.gz"
    assert lines[8] == "\tAPPEND console=ttyS0,115200 base norestore noautologin"


def test_the_first_partition_offset_comes_from_the_mbr():
    mbr = bytearray(512)
    mbr[454:458] = (2048).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    assert bench_boot.partition_offset(bytes(mbr)) == 1048576
    with pytest.raises(PipelineError, match="no MBR partition table"):
        bench_boot.partition_offset(bytes(mbr[:510]) + b"\0\0")
    mbr[454:458] = bytes(4)
    with pytest.raises(PipelineError, match="first partition is empty"):
        bench_boot.partition_offset(bytes(mbr))
