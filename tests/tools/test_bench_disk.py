"""`make bench`'s bare disk (tests/standin/bench_boot.py bare_disk): real qemu-img, real
debugfs, on a small disk laid out as install-to-disk.sh lays out an appliance (an MBR, one
ext4 partition at 1 MiB, /boot/extlinux/extlinux.conf)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.errors import PipelineError
from appliance.run import Runner
from tests.standin import bench_boot

pytestmark = [pytest.mark.tools, pytest.mark.timeout(300)]

CONF = """SERIAL 0 115200
DEFAULT appliance
PROMPT 0
LABEL appliance
\tKERNEL /boot/vmlinuz64
\tINITRD /boot/corepure64.gz,/boot/appliance.gz
\tAPPEND noembed waitusb=10:UUID=ab-1 tce=UUID=ab-1 noautologin console=ttyS0,115200
"""
OFFSET = 1048576


def run(*argv) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True,
                          text=True).stdout


def appliance_disk(tmp_path: Path, conf: str | None) -> Path:
    """A 64 MiB qcow2: MBR, partition 1 at 1 MiB holding ext4 with /boot (and the conf)."""
    tree = tmp_path / "tree"
    (tree / "boot" / "extlinux").mkdir(parents=True)
    (tree / "boot" / "vmlinuz64").write_bytes(b"kernel")
    if conf is not None:
        (tree / "boot" / "extlinux" / "extlinux.conf").write_text(conf)
    raw = tmp_path / "disk.raw"
    run("truncate", "-s", "64M", raw)
    subprocess.run(["sfdisk", "-q", str(raw)], input="start=2048, type=83\n", text=True,
                   check=True, capture_output=True)
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={OFFSET}", "-d", tree, raw, "32M")
    image = tmp_path / "disk.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image)
    return image


def test_the_bare_copy_differs_only_in_its_bootloader_conf(tmp_path: Path):
    image = appliance_disk(tmp_path, CONF)
    before = image.read_bytes()
    raw, append = bench_boot.bare_disk(Runner(), image, tmp_path / "work")
    assert append == ("noembed waitusb=10:UUID=ab-1 tce=UUID=ab-1 "
                      "console=ttyS0,115200 base norestore noautologin")
    device = f"{raw}?offset={OFFSET}"
    assert run("debugfs", "-R", "cat /boot/extlinux/extlinux.conf", device) == \
        bench_boot.bare_extlinux(CONF)
    assert run("debugfs", "-R", "cat /boot/vmlinuz64", device) == "kernel"
    assert image.read_bytes() == before  # the deliverable is never written


def test_an_image_without_the_conf_is_one_clear_error(tmp_path: Path):
    image = appliance_disk(tmp_path, None)
    with pytest.raises(PipelineError, match="no /boot/extlinux/extlinux.conf in the image"):
        bench_boot.bare_disk(Runner(), image, tmp_path / "work")
