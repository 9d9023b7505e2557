"""Tiny Core extensions: mksquashfs argv, metadata formats, ownership, reproducibility."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from appliance.run import Runner
from appliance.tinycore import tcz
from tests.fakes import FakeRunner

EPOCH = 1704067200
INFO = {
    "Description": "Example tools",
    "Version": "1.2",
    "Author": "Someone",
    "Original-site": "https://example.org/",
    "Copying-policy": "GPLv2",
}


def make_tree(root: Path) -> Path:
    """A small extension tree with a tce.installed script, a symlink and an empty dir."""
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/tce.installed").mkdir(parents=True)
    (root / "usr/local/share/empty").mkdir(parents=True)
    tool = root / "usr/local/bin/tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    (root / "usr/local/bin/alias").symlink_to("tool")
    script = root / "usr/local/tce.installed/example"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o700)  # build_tcz must make it 775 whatever the tree says
    (root / "usr/local/tce.installed").chmod(0o700)
    return root


def test_argv_has_tiny_core_parameters():
    argv = tcz.mksquashfs_argv(Path("/t"), Path("/o/x.tcz"), EPOCH, Path("/o/.pf"))
    assert argv[:3] == ["mksquashfs", "/t", "/o/x.tcz"]
    pairs = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("-")}
    assert pairs["-b"] == "4096" and pairs["-comp"] == "gzip"
    assert pairs["-mkfs-time"] == str(EPOCH) and pairs["-all-time"] == str(EPOCH)
    assert pairs["-pf"] == "/o/.pf" and pairs["-root-mode"] == "755"
    assert {"-noappend", "-no-xattrs", "-no-progress"} <= set(argv)
    # -all-root would reset the staff gid the pseudo file gives tce.installed
    assert "-all-root" not in argv
    assert "-pf" not in tcz.mksquashfs_argv(Path("/t"), Path("/o/x.tcz"), EPOCH)


def test_the_appliance_format_is_lz4_in_128k_blocks():
    argv = tcz.mksquashfs_argv(Path("/t"), Path("/o/x.tcz"), EPOCH, squashfs=tcz.APPLIANCE)
    pairs = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("-")}
    assert pairs["-b"] == "131072" and pairs["-comp"] == "lz4" and "-Xhc" in argv
    assert argv.count("-b") == 1 and argv.count("-comp") == 1


def test_pseudo_definitions_make_everything_root_but_tce_installed_staff(tmp_path):
    lines = tcz.pseudo_definitions(make_tree(tmp_path))
    assert "usr/local/tce.installed m 775 0 50" in lines
    assert "usr/local/tce.installed/example m 775 0 50" in lines
    assert "usr/local/bin/tool m 755 0 0" in lines
    assert "usr/local/bin/alias m 777 0 0" in lines
    assert lines == sorted(lines)


def test_pseudo_definitions_refuse_names_that_need_escaping(tmp_path):
    (tmp_path / "a b").write_text("x")
    with pytest.raises(ValueError, match="'a b'"):
        tcz.pseudo_definitions(tmp_path)


def test_list_has_files_and_links_without_leading_slash(tmp_path):
    text = tcz.list_text(make_tree(tmp_path))
    assert text == (
        "usr/local/bin/alias\nusr/local/bin/tool\nusr/local/tce.installed/example\n"
    )


def test_dep_and_md5_formats():
    assert tcz.dep_text(["ipv6-netfilter-KERNEL.tcz", "libx", "libx.tcz"]) == (
        "ipv6-netfilter-KERNEL.tcz\nlibx.tcz\n"
    )
    assert tcz.md5_text("ab" * 16, "x.tcz") == f"{'ab' * 16}  x.tcz\n"


def test_names_are_plain_file_names():
    assert tcz.tcz_name("openssh") == tcz.tcz_name("openssh.tcz") == "openssh.tcz"
    for bad in ("../x", "a/b", "", ".hidden", "a b"):
        with pytest.raises(ValueError):
            tcz.tcz_name(bad)


def test_info_fields_in_tiny_core_order():
    text = tcz.info_text("x.tcz", {**INFO, "Comments": "first\n----\nsecond"}, 300_000, EPOCH)
    fields = [line.split(":", 1)[0] for line in text.splitlines() if not line.startswith(" ")]
    assert fields == list(tcz.INFO_FIELDS)
    assert text.startswith("Title:          x.tcz\nDescription:    Example tools\n")
    assert "Size:           293K\n" in text
    assert "Comments:       first\n                ----\n                second\n" in text
    assert text.endswith("Current:        2024/01/01 Version 1.2\n")


def test_info_rejects_unknown_computed_and_missing_fields():
    with pytest.raises(ValueError, match="unknown \\['Colour'\\]"):
        tcz.info_text("x.tcz", {**INFO, "Colour": "red"}, 1, EPOCH)
    with pytest.raises(ValueError, match="computed \\['Size'\\]"):
        tcz.info_text("x.tcz", {**INFO, "Size": "1K"}, 1, EPOCH)
    with pytest.raises(ValueError, match="missing \\['Author'\\]"):
        tcz.info_text("x.tcz", {k: v for k, v in INFO.items() if k != "Author"}, 1, EPOCH)


def test_human_size():
    assert [tcz.human_size(n) for n in (1, 1024, 1025, 5 * 2**20 + 2**19)] == [
        "1K", "1K", "2K", "5.5M"
    ]


def test_build_tcz_runs_mksquashfs_and_writes_metadata(tmp_path):
    def fake_mksquashfs(argv):
        Path(argv[2]).write_bytes(b"squashfs")
        return 0, ""

    runner = FakeRunner(fake_mksquashfs)
    out = tcz.build_tcz(make_tree(tmp_path / "tree"), tmp_path / "out", "example",
                        ["ipv6-netfilter-KERNEL"], INFO, runner, EPOCH)
    assert out == tmp_path / "out" / "example.tcz"
    assert runner.calls[0][:3] == ["mksquashfs", str(tmp_path / "tree"), str(out)]
    md5 = hashlib.md5(b"squashfs").hexdigest()
    assert (tmp_path / "out/example.tcz.md5.txt").read_text() == f"{md5}  example.tcz\n"
    assert (tmp_path / "out/example.tcz.dep").read_text() == "ipv6-netfilter-KERNEL.tcz\n"
    assert "usr/local/bin/tool\n" in (tmp_path / "out/example.tcz.list").read_text()
    assert (tmp_path / "out/example.tcz.info").read_text().startswith("Title:          example")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "example.tcz", "example.tcz.dep", "example.tcz.info", "example.tcz.list",
        "example.tcz.md5.txt",
    ]  # the pseudo file is gone
    tcz.build_tcz(tmp_path / "tree", tmp_path / "out", "example", [], INFO, runner, EPOCH)
    assert not (tmp_path / "out/example.tcz.dep").exists()


@pytest.mark.tools
def test_real_build_is_reproducible_with_tiny_core_ownership(tmp_path):
    runner = Runner(echo=lambda line: None)
    tree = make_tree(tmp_path / "tree")
    if os.geteuid() == 0:
        os.lchown(tree / "usr/local/bin/tool", 1234, 4321)  # the host's owner must not leak
    first = tcz.build_tcz(tree, tmp_path / "a", "example", [], INFO, runner, EPOCH)
    os.utime(tree / "usr/local/bin/tool", (0, 0))  # nor the host's mtimes
    second = tcz.build_tcz(tree, tmp_path / "b", "example", [], INFO, runner, EPOCH)
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a/example.tcz.info").read_text() == (
        tmp_path / "b/example.tcz.info"
    ).read_text()
    listing = subprocess.run(["unsquashfs", "-lln", str(first)], capture_output=True,
                             text=True, check=True).stdout
    entries = {line.split()[5].removeprefix("squashfs-root"): line.split()
               for line in listing.splitlines() if "squashfs-root" in line}
    assert entries[""][:2] == ["drwxr-xr-x", "0/0"]
    assert entries["/usr/local/tce.installed"][:2] == ["drwxrwxr-x", "0/50"]
    assert entries["/usr/local/tce.installed/example"][:2] == ["-rwxrwxr-x", "0/50"]
    assert entries["/usr/local/bin/tool"][:2] == ["-rwxr-xr-x", "0/0"]
    assert entries["/usr/local/bin/alias"][:2] == ["lrwxrwxrwx", "0/0"]
    assert all(fields[3:5] == ["2024-01-01", "00:00"] for fields in entries.values())
