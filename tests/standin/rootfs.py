"""The stand-in's userland: corepure64.gz, Tiny Core 11's base initramfs, from Debian packages.

What goes in, and why it is shaped so:
- busybox with links for exactly Tiny Core's applets (the list in tc11_userland.toml): a
  command tc lacks is `not found`, as on tc11, whose busybox has FEATURE_PREFER_APPLETS and
  SH_STANDALONE unset (oVirt/ovirt-tinycore-linux src/busybox/busybox-1.34.1_config_* @
  9d9ab19). Debian's busybox-static has both set (its ash runs every applet compiled in,
  link or not), so /bin/busybox is Debian's dynamic `busybox` build of the same version
  (fetched with `apt-get download`: it conflicts with busybox-static as an installed
  package), interpreter rewritten to /lib; busybox-static is /bin/busybox.suid, as Tiny
  Core's setuid build, for the applets the dynamic build lacks (su, passwd, crontab...).
  The stand-in's own boot calls what tc lacks but it needs (mdev, findfs, mkpasswd) as
  `busybox APPLET`, and the kernel's hotplug helper is a link outside PATH;
- util-linux's blkid in /sbin, as in tc11's base (tc-functions' find_mountpoint uses it);
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
import tempfile
import tomllib
from pathlib import Path

from appliance.config import DEFAULT_SOURCE_DATE_EPOCH
from appliance.run import Runner
from tests.standin import cpio, debfiles, module_extensions
from tests.standin.cache import cached_build, component_dir

HERE = Path(__file__).resolve().parent
TREE = HERE / "rootfs"
SUDO_SOURCE = HERE / "sudo.c"
BUILDER_VERSION = "2"  # bump when the build changes what lands in the archive
ARCHIVE = "corepure64.gz"

STATIC_BUSYBOX = Path("/usr/bin/busybox")  # busybox-static: /bin/busybox.suid
DYNAMIC_BUSYBOX_PACKAGE = "busybox"
BLKID = Path("/sbin/blkid")  # util-linux
INTERPRETER = "/lib/ld-linux-x86-64.so.2"
USERLAND = HERE / "tc11_userland.toml"
HOTPLUG_MDEV = "usr/lib/standin/mdev"  # outside PATH: the stand-in's, not Tiny Core's
LDCONFIG = Path("/sbin/ldconfig")  # static in Debian's libc-bin
HOST_LIBDIR = Path("/lib/x86_64-linux-gnu")
LIBS = (
    "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libresolv.so.2", "libpthread.so.0",
    "libdl.so.2", "librt.so.1", "libutil.so.1", "libanl.so.1", "libnss_files.so.2",
    "libnss_dns.so.2", "libcrypt.so.1", "libgcc_s.so.1", "libseccomp.so.2", "libblkid.so.1",
)  # fmt: skip

TC_UID = 1001
STAFF_GID = 50
# Directories the data tree cannot hold (git keeps no empty ones): path -> (uid, gid, mode).
DIRECTORIES = {
    "bin": (0, 0, 0o755), "sbin": (0, 0, 0o755), "lib": (0, 0, 0o755),
    "usr/bin": (0, 0, 0o755), "usr/sbin": (0, 0, 0o755), "usr/lib": (0, 0, 0o755),
    "usr/lib/standin": (0, 0, 0o755),
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


def tc_applets() -> list[str]:
    """Tiny Core 11's busybox applets (tests/standin/tc11_userland.toml, sources there)."""
    return tomllib.loads(USERLAND.read_text(encoding="utf-8"))["busybox"]["applets"]


def dynamic_busybox(runner: Runner) -> Path:
    """Debian's dynamic busybox binary, of the installed busybox-static's version, cached."""
    version = debfiles.versions(runner, ["busybox-static"], transitive=False)["busybox-static"]
    folder = component_dir("debs")
    binary = folder / f"busybox_{version.replace(':', '%3a')}" / "busybox"
    if binary.is_file():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder))
    try:
        runner.run(["apt-get", "download", f"{DYNAMIC_BUSYBOX_PACKAGE}={version}"],
                   cwd=work, log="rootfs")
        deb = next(work.glob("*.deb"))
        runner.run(["dpkg-deb", "-x", deb, work / "x"], log="rootfs")
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "x" / "bin" / "busybox", binary)
        binary.chmod(0o755)  # run on the host (its own interpreter) to list the applets
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


def with_interpreter(runner: Runner, src: Path, work: Path) -> bytes:
    """`src` with its ELF interpreter at /lib, where Tiny Core has it (there is no /lib64)."""
    dest = work / f"interp-{src.name}"
    shutil.copyfile(src, dest)
    runner.run(["patchelf", "--set-interpreter", INTERPRETER, dest], log="rootfs")
    data = dest.read_bytes()
    dest.unlink()
    return data


def applet_paths(runner: Runner, binary: Path) -> dict[str, str]:
    """applet -> where busybox puts its link (bin/ls, sbin/mdev, usr/bin/wget)."""
    listing = runner.run([binary, "--list-full"], log="rootfs").output.split()
    return {path.rsplit("/", 1)[-1]: path for path in listing if "/" in path}


def busybox_entries(runner: Runner, work: Path) -> list[cpio.Entry]:
    """/bin/busybox, /bin/busybox.suid and a link for each of Tiny Core's applets only."""
    dynamic = dynamic_busybox(runner)
    paths = {"busybox": applet_paths(runner, dynamic),
             "busybox.suid": applet_paths(runner, STATIC_BUSYBOX)}
    entries = [
        cpio.file("bin/busybox", with_interpreter(runner, dynamic, work), 0o755),
        cpio.file("bin/busybox.suid", STATIC_BUSYBOX.read_bytes(), 0o4755),
        cpio.symlink(HOTPLUG_MDEV, "/bin/busybox"),
    ]
    for applet in tc_applets():
        binary = "busybox" if applet in paths["busybox"] else "busybox.suid"
        path = paths[binary].get(applet)
        if path is None or path == "bin/busybox":
            continue  # neither Debian build has it (pkill, nohup...): README lists them
        target = posixpath.relpath(f"bin/{binary}", posixpath.dirname(path))
        entries.append(cpio.symlink(path, target))
    return entries


def library_entries() -> list[cpio.Entry]:
    """glibc's runtime (and libseccomp) under their sonames in /lib, plus static ldconfig."""
    entries = [
        cpio.file(f"lib/{name}", (HOST_LIBDIR / name).resolve().read_bytes(), 0o755)
        for name in LIBS
    ]
    entries.append(cpio.file("sbin/ldconfig", LDCONFIG.read_bytes(), 0o755))
    return entries


def blkid_entry(runner: Runner, work: Path) -> cpio.Entry:
    return cpio.file("sbin/blkid", with_interpreter(runner, BLKID, work), 0o755)


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
    ours += [blkid_entry(runner, work)]
    ours += module_entries(kernel, runner, work)
    ours += [
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.char_device("dev/null", 1, 3, 0o666),
    ]
    taken = {e.path for e in ours}
    ours += [e for e in busybox_entries(runner, work) if e.path not in taken]
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
        "busybox": sha256(dynamic_busybox(runner)),
        "busybox.suid": sha256(STATIC_BUSYBOX),
        "blkid": sha256(BLKID),
        "userland": sha256(USERLAND),
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
