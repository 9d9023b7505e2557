"""The stand-in's userland: corepure64.gz, Tiny Core 11's base initramfs, from Debian packages.

What goes in, and why it is shaped so:
- busybox-static as /bin/busybox with its applet links (Tiny Core's userland is busybox);
- the boot scripts and configuration in tests/standin/rootfs/ (written for this project with
  tc11's semantics); /opt is group staff and writable by it, so the user edits bootlocal.sh
  and the filetool lists without sudo, as on Tiny Core;
- glibc's runtime in /lib and no /lib64: Tiny Core's interpreter is
  /lib/ld-linux-x86-64.so.2, so dynamically linked release binaries need the `lib64 -> lib`
  fix, as on tc11; libseccomp.so.2 because Debian's runc needs it;
- every module that tinycorelinux/sorter sorter.sh @ bf13d13 leaves in the base (what no
  module extension claims: module_extensions.py), gzipped as tc11's, with busybox depmod's
  indexes, and the kernel.tclocal link that extension modules hang from;
- a setuid-root `sudo` compiled from tests/standin/sudo.c (busybox has none);
- /dev/console and /dev/null as archive entries (DEVTMPFS is off, as on tc11).
The archive is written in Python (tests/standin/cpio.py): sorted, one mtime from
SOURCE_DATE_EPOCH, owners as Tiny Core has them, so two builds are byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
from pathlib import Path

from appliance.config import DEFAULT_SOURCE_DATE_EPOCH
from appliance.run import Runner
from tests.standin import cpio, module_extensions
from tests.standin.cache import cached_build, component_dir

HERE = Path(__file__).resolve().parent
TREE = HERE / "rootfs"
SUDO_SOURCE = HERE / "sudo.c"
BUILDER_VERSION = "2"  # bump when the build changes what lands in the archive
ARCHIVE = "corepure64.gz"

BUSYBOX = Path("/usr/bin/busybox")
LDCONFIG = Path("/sbin/ldconfig")  # static in Debian's libc-bin
HOST_LIBDIR = Path("/lib/x86_64-linux-gnu")
LIBS = (
    "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libresolv.so.2", "libpthread.so.0",
    "libdl.so.2", "librt.so.1", "libutil.so.1", "libanl.so.1", "libnss_files.so.2",
    "libnss_dns.so.2", "libcrypt.so.1", "libgcc_s.so.1", "libseccomp.so.2",
)  # fmt: skip

TC_UID = 1001
STAFF_GID = 50
# Directories the data tree cannot hold (git keeps no empty ones): path -> (uid, gid, mode).
DIRECTORIES = {
    "bin": (0, 0, 0o755), "sbin": (0, 0, 0o755), "lib": (0, 0, 0o755),
    "usr/bin": (0, 0, 0o755), "usr/sbin": (0, 0, 0o755), "usr/lib": (0, 0, 0o755),
    "dev": (0, 0, 0o755), "dev/pts": (0, 0, 0o755), "dev/shm": (0, 0, 0o1777),
    "proc": (0, 0, 0o555), "sys": (0, 0, 0o555), "mnt": (0, 0, 0o755),
    "tmp": (0, 0, 0o1777), "root": (0, 0, 0o700), "home": (0, 0, 0o755),
    "home/tc": (TC_UID, STAFF_GID, 0o755), "etc/sysconfig": (0, 0, 0o755),
    "var": (0, 0, 0o755), "var/run": (0, 0, 0o755), "var/log": (0, 0, 0o755),
    "var/tmp": (0, 0, 0o1777), "var/spool": (0, 0, 0o755),
    "usr/local": (0, 0, 0o755), "usr/local/bin": (0, 0, 0o755),
    "usr/local/sbin": (0, 0, 0o755), "usr/local/lib": (0, 0, 0o755),
    "usr/local/etc": (0, 0, 0o755), "usr/local/share": (0, 0, 0o755),
    "usr/local/tce.installed": (0, STAFF_GID, 0o775),
}  # fmt: skip
SECRET_FILES = {"etc/shadow": 0o600, "etc/sudoers": 0o440}


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(env) if env.isdigit() else DEFAULT_SOURCE_DATE_EPOCH


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> str:
    """One sha256 over relative paths, modes, contents and link targets (not over where the
    checkout lives, so clones in other folders share the cache)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            h.update(f"L {rel} {path.readlink()}\n".encode())
        elif path.is_file():
            h.update(f"F {rel} {path.stat().st_mode & 0o7777:o} {sha256(path)}\n".encode())
    return h.hexdigest()


def stage_modules(kernel, runner: Runner, work: Path) -> Path:
    """lib/modules/<release> holding only the base modules (gzipped), with depmod's indexes."""
    gz = module_extensions.gzipped_tree(kernel.moddir, work / "gz", runner, kernel.release)
    planned = module_extensions.plan(
        module_extensions.parse_modules_dep((gz / "modules.dep").read_text(encoding="utf-8")))
    dest = work / "modroot" / "lib" / "modules" / kernel.release
    dest.mkdir(parents=True)
    for rel in planned.base:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gz / rel, dest / rel)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (gz / name).is_file():
            shutil.copyfile(gz / name, dest / name)
    shutil.rmtree(work / "gz")
    module_extensions.depmod(runner, work / "modroot", kernel.release)
    return dest


def module_entries(kernel, runner: Runner, work: Path) -> list[cpio.Entry]:
    moddir = stage_modules(kernel, runner, work)
    prefix = f"lib/modules/{kernel.release}"
    entries = [normalized(e) for e in cpio.tree(moddir, prefix)]
    # Extension modules (usr/local/lib/modules/<release>/kernel/...) become visible to
    # depmod and modprobe through this link, as on Tiny Core.
    entries.append(
        cpio.symlink(f"{prefix}/kernel.tclocal", f"/usr/local/lib/modules/{kernel.release}/kernel")
    )
    return entries


def busybox_entries(runner: Runner) -> list[cpio.Entry]:
    """/bin/busybox and a relative symlink for each applet at busybox's own paths."""
    listing = runner.run([BUSYBOX, "--list-full"], log="rootfs").output.split()
    entries = [cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    for applet in sorted(set(listing)):
        if "/" not in applet or applet == "bin/busybox":
            continue  # linuxrc: /init is ours
        target = posixpath.relpath("bin/busybox", posixpath.dirname(applet))
        entries.append(cpio.symlink(applet, target))
    return entries


def library_entries() -> list[cpio.Entry]:
    """glibc's runtime (and libseccomp) under their sonames in /lib, plus static ldconfig."""
    entries = [
        cpio.file(f"lib/{name}", (HOST_LIBDIR / name).resolve().read_bytes(), 0o755)
        for name in LIBS
    ]
    entries.append(cpio.file("sbin/ldconfig", LDCONFIG.read_bytes(), 0o755))
    return entries


def compile_sudo(runner: Runner, work: Path) -> bytes:
    out = work / "sudo"
    runner.run(
        ["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror",
         "-Wl,--build-id=none", "-o", out, SUDO_SOURCE],
        log="rootfs",
    )  # fmt: skip
    return out.read_bytes()


def normalized(entry: cpio.Entry) -> cpio.Entry:
    """root:root, directories 755, files 755 or 644: the same whatever the host's umask."""
    if stat.S_ISLNK(entry.mode):
        return entry
    executable = stat.S_ISDIR(entry.mode) or entry.mode & 0o100
    return cpio.owned(entry, 0, 0, 0o755 if executable else 0o644)


def tree_entries() -> list[cpio.Entry]:
    """tests/standin/rootfs/ as root:root; /opt group staff and writable by it."""
    entries = []
    for entry in map(normalized, cpio.tree(TREE, "")):
        if entry.path == "opt" or entry.path.startswith("opt/"):
            entry = cpio.owned(entry, 0, STAFF_GID, (entry.mode & 0o7777) | 0o020)
        if entry.path in DIRECTORIES:  # a folder the tree also holds (root/) keeps its mode
            uid, gid, mode = DIRECTORIES[entry.path]
            entry = cpio.owned(entry, uid, gid, mode)
        if entry.path in SECRET_FILES:
            entry = cpio.owned(entry, 0, 0, SECRET_FILES[entry.path])
        entries.append(entry)
    return entries


def rootfs_entries(kernel, runner: Runner, work: Path) -> list[cpio.Entry]:
    """Every entry of corepure64.gz; the data tree wins over a busybox applet link."""
    ours = tree_entries()
    ours += [cpio.file("usr/bin/sudo", compile_sudo(runner, work), 0o4755)]
    ours += library_entries()
    ours += module_entries(kernel, runner, work)
    ours += [
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.char_device("dev/null", 1, 3, 0o666),
    ]
    taken = {e.path for e in ours}
    ours += [e for e in busybox_entries(runner) if e.path not in taken]
    taken = {e.path for e in ours}
    ours += [
        cpio.directory(path, mode, uid, gid)
        for path, (uid, gid, mode) in DIRECTORIES.items()
        if path not in taken
    ]
    return ours


def build_rootfs(kernel, runner: Runner | None = None) -> Path:
    """corepure64.gz for `kernel` (a StandinKernel), from the cache when its inputs match."""
    runner = runner or Runner(component_dir("logs"), echo=lambda line: None)
    material = {
        "builder": BUILDER_VERSION,
        "kernel": kernel.path.name,
        "release": kernel.release,
        "tree": tree_digest(TREE),
        "sudo.c": sha256(SUDO_SOURCE),
        "busybox": sha256(BUSYBOX),
        "ldconfig": sha256(LDCONFIG),
        "gcc": runner.run(["gcc", "-dumpfullversion"], log="rootfs").output.strip(),
        "libs": {name: sha256(HOST_LIBDIR / name) for name in LIBS},
        "sorter": sha256(Path(module_extensions.__file__)),
        "source_date_epoch": source_date_epoch(),
    }

    def build(work: Path) -> dict:
        entries = rootfs_entries(kernel, runner, work)
        data = cpio.gzip_newc(entries, mtime=source_date_epoch())
        (work / ARCHIVE).write_bytes(data)
        shutil.rmtree(work / "modroot")  # scratch: only the archive is kept
        (work / "sudo").unlink()
        return {
            "bytes": len(data),
            "entries": len(entries),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    return cached_build("rootfs", material, build) / ARCHIVE
