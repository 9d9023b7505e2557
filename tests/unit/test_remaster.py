"""The remaster (appliance/stages/remaster/stage.py) on small Tiny-Core-layout ISOs made with pycdlib.

Each test remasters an ISO built here, reopens the result with pycdlib and reads back what
the live system will see: isolinux.cfg, the extra initrds (with the cpio reader), /cde,
the El Torito entry with its boot-info-table, the isohybrid MBR, mydata.tgz.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import time
from pathlib import Path

import pycdlib
import pytest

from appliance.errors import RemasterError
from appliance.paths import REPO
from appliance.stages.remaster import cde
from appliance.stages.remaster.stage import TEMPLATES, Inputs, remaster
from appliance.tinycore import cpio, initrd, isolinux
from tests.unit.test_isolinux import MENU, STOCK

EPOCH = 1704067200
KVER = "6.1.192-tinycore64"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMfakefakefakefakefakefakefakefakefakefakefake test"
HASH = "$6$saltsalt$" + "a" * 86
# isolinux.bin stand-in: room for the boot-info-table (bytes 8-63), then isohybrid's magic
ISOLINUX_BIN = bytes(64) + b"\xfb\xc0\x78\x70" + bytes(range(256)) * 15
SETTINGS = initrd.LiveSettings("http://10.0.2.2:8911/", "tc-test", ("containerd", "faasd"), 321)


def base_initrd() -> bytes:
    """A corepure64.gz with the directories whose owners matter (opt is root:staff 775)."""
    return cpio.gzip_newc([
        cpio.directory("etc"), cpio.directory("etc/sysconfig"), cpio.directory("home"),
        cpio.directory("opt", 0o775, 0, 50), cpio.file("opt/bootsync.sh", b"#!/bin/sh\n", 0o775),
        cpio.file("opt/tcemirror", b"http://repo.tinycorelinux.net/\n"),
    ], mtime=EPOCH)


def tiny_core_iso(path: Path, cfg: str = STOCK, *, lowercase: bool = True, omit: tuple = (),
                  extra: dict[str, bytes] | None = None, joliet: bool = True) -> Path:
    """A CorePure64-style ISO: El Torito no-emulation isolinux with boot-info-table,
    isohybrid MBR, Rock Ridge and Joliet. lowercase: ISO 9660 names as xorriso -l writes
    them (isolinux.cfg;1, pycdlib level 4); else classic uppercase level-3 names."""
    files = {"boot/vmlinuz64": b"kernel" * 1000, "boot/corepure64.gz": base_initrd(),
             "boot/isolinux/isolinux.bin": ISOLINUX_BIN, "boot/isolinux/isolinux.cfg": cfg.encode(),
             "boot/isolinux/boot.msg": b"hello\n", **(extra or {})}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4 if lowercase else 3, rock_ridge="1.09",
            joliet=3 if joliet else None, vol_ident="Core")

    def name(p: str, is_dir: bool = False) -> str:
        p = p if lowercase else p.upper().replace("-", "_")
        return "/" + p + ("" if is_dir else ";1")

    parents = {str(a) for p in files for a in Path(p).parents if str(a) != "."}
    for folder in sorted(parents):
        iso.add_directory(name(folder, True), rr_name=Path(folder).name,
                          joliet_path="/" + folder if joliet else None)
    for p, data in files.items():
        if p in omit:
            continue
        iso.add_fp(io.BytesIO(data), len(data), name(p), rr_name=Path(p).name,
                   joliet_path="/" + p if joliet else None)
    if "boot/isolinux/isolinux.bin" not in omit:
        iso.add_eltorito(name("boot/isolinux/isolinux.bin"), name("boot/isolinux/boot.cat"),
                         rr_bootcatname="boot.cat",
                         joliet_bootcatfile="/boot/isolinux/boot.cat" if joliet else None,
                         boot_load_size=4, boot_info_table=True)
        iso.add_isohybrid(mbr_id=0x7CE0A5E1)
    iso.write(str(path))
    iso.close()
    return path


def extension(tmp: Path, name: str, deps: tuple[str, ...] = ()) -> cde.Extension:
    path = tmp / "tcz" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(hashlib.sha256(name.encode()).digest() * 300)
    return cde.Extension(name, path, deps, hashlib.md5(path.read_bytes()).hexdigest())


def extensions(tmp: Path) -> list[cde.Extension]:
    """A Tiny-Core-like set in load order (deps first), with a -KERNEL dependency."""
    return [
        extension(tmp, "openssl-1.1.1.tcz"),
        extension(tmp, "openssh.tcz", ("openssl-1.1.1.tcz",)),
        extension(tmp, "e2fsprogs.tcz"),
        extension(tmp, f"ipv6-netfilter-{KVER}.tcz"),
        extension(tmp, "iptables.tcz", (f"ipv6-netfilter-{KVER}.tcz",)),
        extension(tmp, "containerd.tcz", ("iptables.tcz",)),
    ]


def inputs(tmp: Path, base: Path, **changes) -> Inputs:
    exts = extensions(tmp)
    values = dict(
        base_iso=base, extensions=tuple(exts),
        onboot=tuple(cde.onboot_order(exts, ["openssh", "e2fsprogs"], KVER)),
        settings=SETTINGS, boot_codes=("cde", "waitusb=5"), title="tc-test 1.0",
        public_key=KEY, mydata=None, epoch=EPOCH)
    values.update(changes)
    return Inputs(**values)


class Opened:
    """A remastered ISO reopened with pycdlib, read by Rock Ridge path."""

    def __init__(self, path: Path):
        self.iso = pycdlib.PyCdlib()
        self.iso.open(str(path))

    def read(self, rr_path: str) -> bytes:
        out = io.BytesIO()
        self.iso.get_file_from_iso_fp(out, rr_path=rr_path)
        return out.getvalue()

    def names(self, rr_dir: str) -> list[str]:
        return sorted(r.rock_ridge.name().decode() for r in self.iso.list_children(rr_path=rr_dir)
                      if not (r.is_dot() or r.is_dotdot()))

    def members(self, rr_path: str) -> dict[str, cpio.Entry]:
        return {e.path: e for e in cpio.read_gzip_newc(self.read(rr_path))}


@pytest.fixture(params=[True, False], ids=["xorriso-lowercase", "uppercase-level3"])
def base(request, tmp_path) -> Path:
    return tiny_core_iso(tmp_path / "CorePure64-11.1.iso", lowercase=request.param)


@pytest.fixture
def done(base, tmp_path) -> Opened:
    out = remaster(inputs(tmp_path, base), tmp_path / "appliance.iso")
    return Opened(out)


def test_isolinux_cfg_boots_the_appliance_with_the_extra_initrds(done):
    config = isolinux.parse(done.read("/boot/isolinux/isolinux.cfg").decode())
    assert config.value("default") == "appliance"
    assert config.globals[0].text.startswith("# Written by tc-appliance")
    label = {ln.keyword: ln.value for ln in config.label("appliance").lines}
    assert label["kernel"] == "/boot/vmlinuz64"
    assert label["initrd"] == "/boot/corepure64.gz,/boot/appliance.gz,/boot/build.gz"
    assert label["append"] == "loglevel=3 cde waitusb=5 console=tty0 console=ttyS0,115200"
    assert config.label_names() == ["appliance", "corepure64", "mc"]
    assert done.names("/boot") == ["appliance.gz", "build.gz", "corepure64.gz", "diskroot.gz",
                                   "isolinux", "vmlinuz64"]


def test_diskroot_gz_is_only_the_traditional_roots_init(done):
    """Loaded after corepure64.gz by an installed traditional system, never by the live ISO."""
    members = done.members("/boot/diskroot.gz")
    assert sorted(members) == ["init"]
    assert members["init"].data == (REPO / "iso-remaster" / "disk-init.sh").read_bytes()
    assert members["init"].mode & 0o777 == 0o755


def test_appliance_gz_carries_what_the_installed_system_keeps(done):
    members = done.members("/boot/appliance.gz")
    assert members["opt/tcemirror"].data == b"http://10.0.2.2:8911/\n"
    for name, template in [("opt/bootsync.sh", "bootsync.sh"), ("opt/bootlocal.sh", "bootlocal.sh"),
                           ("opt/.filetool.lst", "filetool.lst"),
                           ("opt/.xfiletool.lst", "xfiletool.lst")]:
        assert members[name].data == (TEMPLATES / template).read_bytes()
        assert (members[name].uid, members[name].gid) == (0, 50)
    assert stat.S_IMODE(members["opt/bootsync.sh"].mode) == 0o775
    for name in ("firstboot.sh", "yaml-subset.awk", "ovf-env.awk"):  # root's: it handles secrets
        first = members[f"opt/{name}"]
        assert first.data == (TEMPLATES / name).read_bytes()
        assert (first.uid, first.gid) == (0, 0)
        assert stat.S_IMODE(first.mode) == (0o755 if name.endswith(".sh") else 0o644)
    stop = members["opt/appliance-stop.sh"]  # every power-off stops the services first
    assert stop.data == (TEMPLATES / "appliance-stop.sh").read_bytes()
    assert stat.S_IMODE(stop.mode) == 0o755 and stop.uid == 0
    button = members["usr/local/etc/acpi/events/power-button"]  # acpid.tcz's (acpid2) rule
    assert b"\nevent=button/power.*\naction=/opt/appliance-stop.sh poweroff\n" in button.data
    assert stat.S_IMODE(button.mode) == 0o644 and button.uid == 0
    assert "etc/acpi/PWRF/00000080" not in members  # busybox acpid's: tc11 has none
    # the kernel re-applies a directory's owner and mode: /opt keeps the base's root:staff 775
    opt = members["opt"]
    assert stat.S_ISDIR(opt.mode) and stat.S_IMODE(opt.mode) == 0o775 and opt.gid == 50
    conf = "etc/sysconfig/appliance"
    assert members[f"{conf}/services"].data == b"containerd\nfaasd\n"
    assert members[f"{conf}/ready_timeout"].data == b"321\n"
    assert members[f"{conf}/hostname"].data == b"tc-test\n"
    assert f"{conf}/tc_password_hash" not in members  # the recipe set none
    assert cpio.mtimes(gzip.decompress(done.read("/boot/appliance.gz"))) == {EPOCH}


def test_password_hash_is_root_only(base, tmp_path):
    settings = initrd.LiveSettings("http://x/", "h", (), 60, HASH)
    out = remaster(inputs(tmp_path, base, settings=settings), tmp_path / "a.iso")
    entry = Opened(out).members("/boot/appliance.gz")["etc/sysconfig/appliance/tc_password_hash"]
    assert entry.data == f"{HASH}\n".encode()
    assert stat.S_IMODE(entry.mode) == 0o600 and entry.uid == 0


def test_build_gz_carries_only_the_public_build_key_for_tc(done):
    members = done.members("/boot/build.gz")
    assert sorted(members) == ["home", "home/tc", "home/tc/.ssh", "home/tc/.ssh/authorized_keys"]
    key = members["home/tc/.ssh/authorized_keys"]
    assert key.data == f"{KEY}\n".encode()
    assert (stat.S_IMODE(key.mode), key.uid, key.gid) == (0o600, 1001, 50)
    assert (stat.S_IMODE(members["home/tc/.ssh"].mode), members["home/tc/.ssh"].uid) == (0o700, 1001)


def test_cde_has_every_extension_and_onboot_only_what_the_install_needs(done, tmp_path):
    assert done.read("/cde/onboot.lst").decode().splitlines() == [
        "openssl-1.1.1.tcz", "openssh.tcz", "e2fsprogs.tcz"]  # deps first; no containerd
    names = done.names("/cde/optional")
    for ext in extensions(tmp_path):
        assert done.read(f"/cde/optional/{ext.name}") == ext.path.read_bytes()
        assert done.read(f"/cde/optional/{ext.name}.md5.txt").decode() == f"{ext.md5}  {ext.name}\n"
        assert (f"{ext.name}.dep" in names) == bool(ext.deps)
    assert done.read("/cde/optional/iptables.tcz.dep") == f"ipv6-netfilter-{KVER}.tcz\n".encode()
    assert len(names) == 6 * 2 + 3


def test_el_torito_boot_info_table_and_isohybrid_survive(done, tmp_path):
    catalog = done.iso.eltorito_boot_catalog
    assert catalog is not None
    boot = done.iso.get_record(rr_path="/boot/isolinux/isolinux.bin")
    entry = catalog.initial_entry
    assert (entry.load_rba, entry.sector_count, entry.boot_media_type) == (
        boot.extent_location(), 4, 0)  # no emulation, 4 sectors, isolinux.bin
    data = done.read("/boot/isolinux/isolinux.bin")
    pvd, lba, length, csum = struct.unpack_from("<4I", data, 8)
    assert (pvd, lba, length) == (16, boot.extent_location(), len(ISOLINUX_BIN))
    assert csum == sum(struct.unpack_from(f"<{(len(data) - 64) // 4}I", data, 64)) & 0xFFFFFFFF
    assert data[64:] == ISOLINUX_BIN[64:]
    assert done.iso.isohybrid_mbr is not None
    image = (tmp_path / "appliance.iso").read_bytes()
    assert image[510:512] == b"\x55\xaa"
    _status, _chs, ptype, _end, start, sectors = struct.unpack_from("<B3sB3sII", image, 446)
    assert ptype == 0x17 and start == 0 and sectors * 512 == len(image)
    assert done.iso.has_rock_ridge() and done.iso.has_joliet()
    joliet = done.iso.get_record(joliet_path="/cde/optional/openssl-1.1.1.tcz")
    assert joliet.get_data_length() == (tmp_path / "tcz" / "openssl-1.1.1.tcz").stat().st_size
    cfg = done.iso.get_record(joliet_path="/boot/isolinux/isolinux.cfg")
    assert cfg.get_data_length() == len(done.read("/boot/isolinux/isolinux.cfg"))


def test_a_base_without_joliet_stays_without(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso", joliet=False)
    out = Opened(remaster(inputs(tmp_path, base), tmp_path / "a.iso"))
    assert not out.iso.has_joliet() and out.iso.has_rock_ridge()
    assert out.read("/cde/onboot.lst").startswith(b"openssl-1.1.1.tcz\n")


def test_new_names_are_valid_iso9660_and_old_ones_unchanged(base, done):
    before = pycdlib.PyCdlib()
    before.open(str(base))
    cfg = before.full_path_from_dirrecord(before.get_record(rr_path="/boot/isolinux/isolinux.cfg"))
    before.close()
    after = done.iso.full_path_from_dirrecord(
        done.iso.get_record(rr_path="/boot/isolinux/isolinux.cfg"))
    assert after == cfg  # replaced under its own ISO 9660 name
    for rr in ("/boot/appliance.gz", f"/cde/optional/ipv6-netfilter-{KVER}.tcz.md5.txt"):
        name = done.iso.full_path_from_dirrecord(done.iso.get_record(rr_path=rr)).rsplit("/", 1)[1]
        stem = name.split(";")[0]
        assert stem == stem.upper() and len(stem) <= 31 and set(stem) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."), name


def test_second_run_is_byte_identical_whatever_the_clock_and_time_zone(base, tmp_path, monkeypatch):
    first = remaster(inputs(tmp_path, base), tmp_path / "one.iso").read_bytes()
    time.sleep(1.1)  # pycdlib would stamp a new second into the volume descriptor
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        second = remaster(inputs(tmp_path, base), tmp_path / "two.iso").read_bytes()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert b"2024010100000000" in first  # SOURCE_DATE_EPOCH in the volume descriptor
    later = remaster(inputs(tmp_path, base, epoch=EPOCH + 86400), tmp_path / "three.iso")
    assert later.read_bytes() != first


def test_menu_c32_style_base_with_uppercase_directives(tmp_path):
    base = tiny_core_iso(tmp_path / "tcp.iso", MENU, lowercase=False)
    out = Opened(remaster(inputs(tmp_path, base), tmp_path / "a.iso"))
    config = isolinux.parse(out.read("/boot/isolinux/isolinux.cfg").decode())
    assert config.value("ui") == "menu.c32" and config.value("default") == "appliance"
    assert config.label_names() == ["appliance", "tc", "tcw", "core", "corew", "memtest"]


def test_restore_data_lies_at_the_root_where_restore_finds_it(base, tmp_path):
    data = cpio.gzip_newc([], 0)  # any bytes: restore.py makes the real archive
    out = Opened(remaster(inputs(tmp_path, base, mydata=data), tmp_path / "a.iso"))
    assert out.read("/mydata.tgz") == data
    assert "mydata.tgz" in out.names("/")


def test_an_existing_cde_is_replaced(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso", extra={"cde/onboot.lst": b"Xlibs.tcz\n",
                                                     "cde/optional/Xlibs.tcz": b"x" * 5000})
    out = Opened(remaster(inputs(tmp_path, base), tmp_path / "a.iso"))
    assert "Xlibs.tcz" not in out.names("/cde/optional")
    assert out.read("/cde/onboot.lst").startswith(b"openssl-1.1.1.tcz\n")


# --- bad input: a clear error and no output ---------------------------------------------------


def refused(tmp_path: Path, base: Path, match: str, **changes) -> None:
    out = tmp_path / "out.iso"
    with pytest.raises(RemasterError, match=match):
        remaster(inputs(tmp_path, base, **changes), out)
    assert not out.exists() and not out.with_name("out.iso.part").exists()


@pytest.mark.parametrize("missing", ["boot/corepure64.gz", "boot/vmlinuz64",
                                     "boot/isolinux/isolinux.cfg"])
def test_not_a_tiny_core_iso(tmp_path, missing):
    base = tiny_core_iso(tmp_path / "b.iso", omit=(missing,))
    refused(tmp_path, base, f"not a Tiny Core ISO: missing {missing}")


def test_no_el_torito(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso", omit=("boot/isolinux/isolinux.bin",))
    refused(tmp_path, base, "not a Tiny Core ISO: missing boot/isolinux/isolinux.bin")


def test_garbage_is_not_an_iso(tmp_path):
    base = tmp_path / "b.iso"
    base.write_bytes(os.urandom(64 * 2048))
    refused(tmp_path, base, "not a readable ISO 9660 image")


def test_truncated_download_is_found(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso")
    opened = Opened(base)
    last = max(opened.iso.get_record(rr_path=f"/{n}").extent_location()
               for n in ("boot/vmlinuz64", "boot/corepure64.gz", "boot/isolinux/isolinux.cfg",
                         "boot/isolinux/boot.msg"))
    opened.iso.close()
    with open(base, "r+b") as fh:  # a download that stopped inside the last file
        fh.truncate(last * 2048 + 100)
    refused(tmp_path, base, "truncated or corrupt")


def test_corepure64_that_is_not_an_initramfs(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso", extra={"boot/corepure64.gz": b"not gzip"})
    refused(tmp_path, base, "not a gzip'd newc initramfs")


def test_already_remastered_iso_is_refused(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso")
    once = remaster(inputs(tmp_path, base), tmp_path / "once.iso")
    refused(tmp_path, once, "already has boot/appliance.gz")


def test_bad_build_key_is_refused(tmp_path):
    refused(tmp_path, tiny_core_iso(tmp_path / "b.iso"), "ssh-ed25519",
            public_key="ssh-rsa AAAA\nssh-ed25519 x")


def test_unsafe_boot_code_is_refused_before_anything_is_written(tmp_path):
    refused(tmp_path, tiny_core_iso(tmp_path / "b.iso"), "not a safe token",
            boot_codes=("cde", "x\nAPPEND y"))


def test_onboot_needs_every_dependency_in_the_set(tmp_path):
    exts = [e for e in extensions(tmp_path) if e.name != "openssl-1.1.1.tcz"]
    with pytest.raises(RemasterError, match="openssl-1.1.1.tcz"):
        cde.onboot_order(exts, ["openssh"], KVER)


def test_onboot_expands_kernel_names(tmp_path):
    order = cde.onboot_order(extensions(tmp_path), ["openssh", "ipv6-netfilter-KERNEL"], KVER)
    assert order == ["openssl-1.1.1.tcz", "openssh.tcz", f"ipv6-netfilter-{KVER}.tcz"]


def test_an_unwritable_output_is_a_clear_error(tmp_path):
    base = tiny_core_iso(tmp_path / "b.iso")
    out = tmp_path / "missing-dir" / "a.iso"
    with pytest.raises(RemasterError, match="cannot write"):
        remaster(inputs(tmp_path, base), out)
    assert not out.parent.exists()
