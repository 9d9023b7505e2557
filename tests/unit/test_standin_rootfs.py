"""The stand-in's corepure64.gz and ISO configuration, without a VM or the real kernel.

A fake kernel (tiny .ko files gcc makes, with depmod's index) stands in for the cached
stand-in kernel, so these run in seconds; the boots are in tests/vm/test_standin_boot.py.
"""

from __future__ import annotations

import gzip
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pytest

from appliance.run import Runner
from tests.standin import cpio, iso, rootfs
from tests.vm.qemu_harness import key_name, screen_from_xp

NEEDS = ("gcc", "depmod", "busybox", "patchelf", "apt-get")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in NEEDS) or not rootfs.STATIC_BUSYBOX.is_file(),
    reason=f"needs {', '.join(NEEDS)} (busybox-static)",
)
RELEASE = "6.1.0-tinycore64"
QUIET = Runner(echo=lambda line: None)


@dataclass(frozen=True)
class FakeKernel:
    path: Path
    release: str

    @property
    def moddir(self) -> Path:
        return self.path / "modroot" / "lib" / "modules" / self.release

    @property
    def bzimage(self) -> Path:
        return self.path / "bzImage"


def fake_module(name: str, out: Path) -> None:
    """An object file with a .modinfo section: enough for depmod to index it."""
    src = out.with_suffix(".c")
    src.write_text(
        f'static const char n[] __attribute__((used, section(".modinfo"))) = "name={name}";\n'
    )
    QUIET.run(["gcc", "-c", "-o", out, src])
    src.unlink()


# Where the modules lie in a modules_install tree: base ones and two that sorter moves out.
FAKE_MODULES = {
    "e1000": "drivers/net/ethernet/intel/e1000", "virtio_net": "drivers/net",
    "veth": "drivers/net", "virtio_blk": "drivers/block", "virtio_ring": "drivers/virtio",
    "loop": "drivers/block", "squashfs": "fs/squashfs", "stp": "net/802", "llc": "net/llc",
    "bridge": "net/bridge", "nf_nat": "net/netfilter",
}  # fmt: skip
BASE = {"e1000", "virtio_net", "veth", "virtio_blk", "virtio_ring", "loop", "squashfs", "stp",
        "llc"}


@pytest.fixture(scope="module")
def fake_kernel(tmp_path_factory) -> FakeKernel:
    kernel = FakeKernel(tmp_path_factory.mktemp("kernel") / "fakekey", RELEASE)
    kernel.path.mkdir()
    kernel.bzimage.write_bytes(b"not a kernel, but xorriso does not care\n" * 100)
    for name, folder in FAKE_MODULES.items():
        (kernel.moddir / "kernel" / folder).mkdir(parents=True, exist_ok=True)
        fake_module(name, kernel.moddir / "kernel" / folder / f"{name}.ko")
    QUIET.run(["depmod", "-b", kernel.path / "modroot", RELEASE])
    return kernel


@pytest.fixture(scope="module")
def archive(fake_kernel, tmp_path_factory, monkeypatch_module) -> bytes:
    monkeypatch_module.setenv("APPLIANCE_CACHE", str(tmp_path_factory.mktemp("cache")))
    path = rootfs.build_rootfs(fake_kernel, QUIET)
    return path.read_bytes()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def entries(archive) -> dict[str, cpio.Entry]:
    return {e.path: e for e in cpio.read_newc(gzip.decompress(archive))}


def test_rebuilding_in_another_cache_gives_the_same_bytes(fake_kernel, archive, tmp_path,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path))
    again = rootfs.build_rootfs(fake_kernel, QUIET)
    assert again.read_bytes() == archive
    assert rootfs.build_rootfs(fake_kernel, QUIET) == again  # cached


def test_entries_are_sorted_and_dated_source_date_epoch(archive):
    raw = gzip.decompress(archive)
    paths = [e.path for e in cpio.read_newc(raw)]
    assert paths == sorted(paths)
    assert cpio.mtimes(raw) == {rootfs.source_date_epoch()}


def test_glibc_is_in_lib_and_there_is_no_lib64(entries):
    assert not any(p == "lib64" or p.startswith("lib64/") for p in entries)
    loader = entries["lib/ld-linux-x86-64.so.2"]
    assert stat.S_ISREG(loader.mode) and loader.data.startswith(b"\x7fELF")
    for lib in ("libc.so.6", "libm.so.6", "libresolv.so.2", "libpthread.so.0", "libseccomp.so.2"):
        assert stat.S_ISREG(entries[f"lib/{lib}"].mode), lib


def test_sudo_is_setuid_root_and_static(entries):
    sudo = entries["usr/bin/sudo"]
    assert stat.S_IMODE(sudo.mode) == 0o4755 and (sudo.uid, sudo.gid) == (0, 0)
    assert b"/lib64/ld-linux" not in sudo.data and b"/lib/ld-linux" not in sudo.data


def test_device_nodes_are_archive_entries(entries):
    console, null = entries["dev/console"], entries["dev/null"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert stat.S_ISCHR(null.mode) and null.rdev == (1, 3) and stat.S_IMODE(null.mode) == 0o666


def test_busybox_applets_link_to_bin_busybox(entries):
    assert stat.S_ISREG(entries["bin/busybox"].mode)
    for applet, target in (("bin/sh", "busybox"), ("sbin/switch_root", "../bin/busybox"),
                           ("usr/bin/wget", "../../bin/busybox")):  # fmt: skip
        assert stat.S_ISLNK(entries[applet].mode)
        assert entries[applet].data.decode() == target
    # Our scripts win over an applet of the same name; /init is ours, not linuxrc.
    assert entries["init"].data.startswith(b"#!/bin/sh")
    assert entries["sbin/depmod"].data.startswith(b"#!/bin/sh")
    assert "linuxrc" not in entries


def test_only_tiny_cores_applets_are_linked(entries):
    # tc11's busybox lacks these (oVirt/ovirt-tinycore-linux busybox-1.34.1_config_*): with
    # no link they are `not found`, even though Debian's busybox has them compiled in.
    for path in ("usr/bin/sha256sum", "bin/stat", "sbin/acpid", "sbin/ip", "sbin/mdev",
                 "sbin/findfs", "bin/mountpoint", "usr/bin/base64", "usr/bin/unshare",
                 "usr/bin/nsenter", "sbin/fstrim", "usr/sbin/blkdiscard", "usr/bin/mkpasswd"):
        assert path not in entries, path
    # Debian's dynamic busybox has no su: it comes from busybox.suid, as on Tiny Core.
    assert entries["bin/su"].data.decode() == "busybox.suid"
    assert stat.S_IMODE(entries["bin/busybox.suid"].mode) == 0o4755
    # The stand-in's own hotplug helper, outside PATH.
    assert entries["usr/lib/standin/mdev"].data.decode() == "/bin/busybox"


def test_busybox_and_blkid_load_from_lib(entries):
    for path in ("bin/busybox", "sbin/blkid"):
        assert b"/lib/ld-linux-x86-64.so.2\0" in entries[path].data, path
        assert b"/lib64/ld-linux-x86-64.so.2" not in entries[path].data, path
    assert stat.S_ISREG(entries["lib/libblkid.so.1"].mode)


def test_tiny_core_users_owners_and_release(entries):
    assert b"tc:x:1001:50:" in entries["etc/passwd"].data
    assert b"staff:x:50:" in entries["etc/group"].data
    assert stat.S_IMODE(entries["etc/shadow"].mode) == 0o600
    home = entries["home/tc"]
    assert (home.uid, home.gid) == (1001, 50)
    installed = entries["usr/local/tce.installed"]
    assert (installed.gid, stat.S_IMODE(installed.mode)) == (50, 0o775)
    assert entries["opt/bootlocal.sh"].gid == 50
    assert entries["usr/share/doc/tc/release.txt"].data == b"11.1\n"
    assert entries["opt/tcemirror"].data == b"http://repo.tinycorelinux.net/\n"
    root = entries["root"]  # the tree holds root/.profile; the folder stays root's alone
    assert (root.uid, root.gid, stat.S_IMODE(root.mode)) == (0, 0, 0o700)
    # tty1's login chain of Core-scripts @ 0ed6e60: autologin -> root's .profile -> tc
    assert b"exec /bin/login -f root" in entries["sbin/autologin"].data
    assert b"/etc/sysconfig/noautologin" in entries["root/.profile"].data


def test_base_modules_are_what_sorter_leaves_gzipped_with_the_tclocal_link(entries):
    prefix = f"lib/modules/{RELEASE}"
    names = {Path(p).name for p in entries if p.startswith(prefix) and ".ko" in p}
    # tinycorelinux/sorter: net/bridge and net/netfilter go to extensions, the rest stays
    assert names == {f"{n}.ko.gz" for n in BASE}
    data = gzip.decompress(entries[f"{prefix}/kernel/net/802/stp.ko.gz"].data)
    assert b"name=stp" in data
    assert b"kernel/drivers/net/veth.ko.gz:" in entries[f"{prefix}/modules.dep"].data
    link = entries[f"{prefix}/kernel.tclocal"]
    assert stat.S_ISLNK(link.mode)
    assert link.data.decode() == f"/usr/local/lib/modules/{RELEASE}/kernel"


def test_qemu_harness_key_names_and_screen():
    assert [key_name(c) for c in "aZ0 =/:\n"] == [
        "a",
        "shift-z",
        "0",
        "spc",
        "equal",
        "slash",
        "shift-semicolon",
        "ret",
    ]
    cells = " ".join(f"0x07{ord(c):02x}" for c in "boot: ".ljust(80) + "x")
    screen = screen_from_xp(f"00000000000b8000: {cells}")
    assert screen.splitlines() == ["boot:", "x"]


def test_cpio_refuses_a_path_given_twice():
    with pytest.raises(ValueError, match="twice"):
        cpio.newc([cpio.file("a", b"1"), cpio.file("a", b"2")])


def test_isolinux_cfg_is_tiny_cores_plain_prompt():
    lines = [line.strip() for line in iso.ISOLINUX_CFG.splitlines()]
    for expected in ("display boot.msg", "default corepure64", "label corepure64",
                     "kernel /boot/vmlinuz64", "initrd /boot/corepure64.gz",
                     "append loglevel=3", "label mc",
                     "append initrd=/boot/corepure64.gz loglevel=3", "implicit 0", "prompt 1",
                     "timeout 300", "F1 boot.msg", "F2 f2", "F3 f3", "F4 f4"):  # fmt: skip
        assert expected in lines
    assert not any(line.lower().startswith("serial") for line in lines)  # tc11 has none


def test_xorriso_argv_is_el_torito_isohybrid_and_dated():
    argv = iso.xorriso_argv(Path("/s"), Path("/o.iso"), 1704067200)
    joined = " ".join(argv)
    for part in ("-b boot/isolinux/isolinux.bin", "-c boot/isolinux/boot.cat",
                 "-no-emul-boot", "-boot-load-size 4", "-boot-info-table", "-r", "-J",
                 f"-isohybrid-mbr {iso.ISOHDPFX}", "--modification-date=2024010100000000",
                 "--set_all_file_dates 2024010100000000", f"-V {iso.VOLUME_ID}"):  # fmt: skip
        assert part in joined


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_iso_is_reproducible_and_laid_out_like_tc11(fake_kernel, tmp_path, monkeypatch):
    images = []
    for n in (1, 2):  # two caches: two real builds
        monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / f"cache{n}"))
        images.append(iso.build_iso(fake_kernel, QUIET))
    assert images[0].read_bytes() == images[1].read_bytes()
    data = images[0].read_bytes()
    assert data[510:512] == b"\x55\xaa"  # isohybrid MBR
    image = pycdlib.PyCdlib()
    image.open(str(images[0]))
    try:
        assert image.pvd.volume_identifier.decode().strip() == iso.VOLUME_ID
        assert image.eltorito_boot_catalog is not None
        isolinux = rock_ridge_names(image, "/boot/isolinux")
        boot = rock_ridge_names(image, "/boot")
    finally:
        image.close()
    assert {"vmlinuz64", "corepure64.gz", "isolinux"} <= boot
    assert {"isolinux.bin", "ldlinux.c32", "isolinux.cfg", "boot.msg", "boot.cat"} <= isolinux


def rock_ridge_names(image: pycdlib.PyCdlib, path: str) -> set[str]:
    names = {c.rock_ridge.name().decode() for c in image.list_children(rr_path=path)}
    return names - {".", ".."}


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_every_rootfs_script_passes_shellcheck():
    scripts = [p for p in sorted(rootfs.TREE.rglob("*"))
               if p.is_file() and p.read_bytes().startswith(b"#!/bin/sh")]  # fmt: skip
    assert len(scripts) >= 15
    result = QUIET.run(["shellcheck", "-s", "sh", *scripts], check=False)
    assert result.returncode == 0, result.output
