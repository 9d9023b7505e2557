"""The stand-in's Tiny-Core-named extensions, made from Debian files already on the host.

openssh, e2fsprogs, syslinux and iptables carry Debian binaries whose ELF interpreter is
rewritten to /lib/ld-linux-x86-64.so.2 (Tiny Core has no /lib64) and, in /usr/local/lib, every
library they load that is not glibc (glibc is in the stand-in's base /lib). Like Tiny Core,
the binaries find /usr/local/lib through /etc/ld.so.conf and the ldconfig that tce-load runs.
The module extensions (net-bridging-KERNEL, ipv6-netfilter-KERNEL, ... and the
original-modules-KERNEL meta-extension) carry the stand-in kernel's modules as Tiny Core's
sorter.sh makes them (module_extensions.py). Built once per set of inputs (cache.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from appliance.run import Runner
from appliance.tinycore import tcz
from tests.standin import cache, debfiles, module_extensions

INTERPRETER = "/lib/ld-linux-x86-64.so.2"
LIB_DIR = "usr/local/lib"
GLIBC_PACKAGE = "libc6"
HERE = Path(__file__).resolve().parent
FILES_DIR = HERE / "extension-files"  # trees copied as they are (init scripts)
BUILDER_VERSION = "2"
STANDIN_NOTE = "STAND-IN: rebuilt from Debian 12 binaries for the offline stand-in of tc11"
XTABLES_DIR = "usr/lib/x86_64-linux-gnu/xtables"  # libxtables' compiled-in XTABLES_LIBDIR


@dataclass(frozen=True)
class Take:
    """Files of a Debian package matching `pattern`, copied into folder `dest` of the tree.

    kind "bin": an executable: interpreter rewritten, libraries carried;
    "plugin": a dlopen()ed library: libraries carried; "data": copied as is."""

    package: str
    pattern: str
    dest: str
    kind: str = "bin"


@dataclass(frozen=True)
class Spec:
    name: str
    takes: tuple[Take, ...]
    info: dict
    links: dict[str, str] = field(default_factory=dict)  # path in the tree -> link target
    deps: tuple[str, ...] = ()
    version_of: str = ""  # the package whose version the .info reports


SBIN, BIN = "usr/local/sbin", "usr/local/bin"
E2FS = "e2fsprogs"

SPECS = (
    Spec(
        "openssh",
        (
            Take("dropbear-bin", "/usr/sbin/dropbear", SBIN),
            Take("dropbear-bin", "/usr/bin/dropbearkey", BIN),
            Take("openssh-client", "/usr/bin/scp", BIN),
            Take("openssh-sftp-server", "/usr/lib/openssh/sftp-server", "usr/local/lib/openssh"),
        ),
        {"Description": "SSH server (dropbear) with scp and sftp-server",
         "Author": "Matt Johnston (dropbear), OpenBSD project (scp, sftp-server)",
         "Original-site": "https://matt.ucc.asn.au/dropbear/dropbear.html",
         "Copying-policy": "MIT (dropbear), BSD (OpenSSH)",
         "Comments": f"{STANDIN_NOTE}.\nStarted with /usr/local/etc/init.d/openssh start, like "
                     "Tiny Core's openssh;\nhost keys are kept in /usr/local/etc/ssh."},
        # Debian's dropbear runs the SFTP subsystem from this compiled-in path.
        links={"usr/lib/sftp-server": "/usr/local/lib/openssh/sftp-server"},
        version_of="dropbear-bin",
    ),
    Spec(
        "e2fsprogs",
        tuple(Take(E2FS, f"*/sbin/{b}", SBIN) for b in ("mke2fs", "e2fsck", "tune2fs",
                                                         "resize2fs", "dumpe2fs"))
        + (Take(E2FS, "/etc/mke2fs.conf", "etc", "data"),),  # mke2fs reads /etc/mke2fs.conf
        {"Description": "ext2/3/4 file system utilities", "Author": "Theodore Ts'o",
         "Original-site": "https://e2fsprogs.sourceforge.net/", "Copying-policy": "GPLv2",
         "Comments": STANDIN_NOTE},
        links={f"{SBIN}/{n}": t for t, names in {
            "mke2fs": ("mkfs.ext2", "mkfs.ext3", "mkfs.ext4"),
            "e2fsck": ("fsck.ext2", "fsck.ext3", "fsck.ext4"),
            "tune2fs": ("e2label",)}.items() for n in names},
        version_of=E2FS,
    ),
    Spec(
        "syslinux",
        (
            Take("extlinux", "/usr/bin/extlinux", SBIN),
            Take("syslinux-common", "/usr/lib/syslinux/mbr/*.bin", "usr/local/share/syslinux",
                 "data"),
            Take("syslinux-common", "/usr/lib/syslinux/modules/bios/*.c32",
                 "usr/local/share/syslinux", "data"),
        ),
        {"Description": "extlinux boot loader, MBR code and COM32 modules",
         "Author": "H. Peter Anvin", "Original-site": "https://www.syslinux.org/",
         "Copying-policy": "GPLv2", "Comments": STANDIN_NOTE},
        version_of="extlinux",
    ),
    Spec(
        "iptables",
        (
            Take("iptables", "/usr/sbin/xtables-legacy-multi", SBIN),
            Take("iptables", f"/{XTABLES_DIR}/libxt_*.so", XTABLES_DIR, "plugin"),
            Take("iptables", f"/{XTABLES_DIR}/libipt_*.so", XTABLES_DIR, "plugin"),
            Take("iptables", f"/{XTABLES_DIR}/libip6t_*.so", XTABLES_DIR, "plugin"),
        ),
        {"Description": "iptables with the legacy (xtables) backend",
         "Author": "Netfilter core team", "Original-site": "https://www.netfilter.org/",
         "Copying-policy": "GPLv2",
         "Comments": f"{STANDIN_NOTE}.\nLegacy backend only, as tc11's kernel expects;\n"
                     f"match/target plugins in /{XTABLES_DIR} (libxtables' built-in path)."},
        links={f"{SBIN}/{n}": "xtables-legacy-multi" for n in (
            "iptables", "iptables-save", "iptables-restore", "iptables-legacy",
            "ip6tables", "ip6tables-save", "ip6tables-restore")},
        # 11.x has no netfilter-KERNEL: its modules are in ipv6-netfilter-KERNEL (andyj713/
        # tinycorelinux-build-scripts build-xtables-addons.sh: 11.x to 15.x use it).
        deps=("ipv6-netfilter-KERNEL.tcz",),
        version_of="iptables",
    ),
    # Tiny Core's busybox has no acpid; its repository has acpid.tcz, acpid2, with the daemon
    # in /usr/local/sbin and rules in /usr/local/etc/acpi/events/ (oVirt/ovirt-tinycore-linux
    # repackages it). Debian's build keeps its compiled-in rule folder (/etc/acpi/events):
    # tc's is unconfirmed, so the product must pass -c, and no rule is shipped (harsher).
    Spec(
        "acpid",
        (
            Take("acpid", "/usr/sbin/acpid", SBIN),
            Take("acpid", "/usr/bin/acpi_listen", BIN),
        ),
        {"Description": "ACPI event daemon (acpid2): runs rules for the power button",
         "Author": "Ted Felix", "Original-site": "https://sourceforge.net/projects/acpid2/",
         "Copying-policy": "GPLv2",
         "Comments": f"{STANDIN_NOTE}.\nRules go in /usr/local/etc/acpi/events/ "
                     "(acpid -c /usr/local/etc/acpi/events)."},
        version_of="acpid",
    ),
)


@dataclass
class TreeBuilder:
    """Fills one extension's tree; collects the non-glibc libraries its ELF files load."""

    tree: Path
    runner: Runner
    glibc: frozenset[Path]
    libraries: dict[str, Path] = field(default_factory=dict)

    def take(self, take: Take) -> None:
        for src in debfiles.find_files(self.runner, take.package, take.pattern):
            dest = self.tree / take.dest / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            dest.chmod(0o755 if take.kind == "bin" else 0o644)
            if take.kind in ("bin", "plugin"):
                self.carry_libraries(src)
            if take.kind == "bin" and debfiles.elf_interpreter(dest):
                self.runner.run(["patchelf", "--set-interpreter", INTERPRETER, dest],
                                log="extensions")

    def carry_libraries(self, src: Path) -> None:
        for soname, path in debfiles.shared_libraries(self.runner, src).items():
            if path.resolve() not in self.glibc:
                self.libraries.setdefault(soname, path)

    def finish(self, links: dict[str, str]) -> None:
        for soname, path in sorted(self.libraries.items()):
            dest = self.tree / LIB_DIR / soname
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.resolve(), dest)
            dest.chmod(0o644)
        for rel, target in links.items():
            link = self.tree / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        extra = FILES_DIR / self.tree.name
        if extra.is_dir():
            shutil.copytree(extra, self.tree, symlinks=True, dirs_exist_ok=True)
        normalise_modes(self.tree)


def normalise_modes(tree: Path) -> None:
    """0755 for folders and executables, 0644 for the rest: the host's umask stays out."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod(0o755 if executable else 0o644)


def glibc_files(runner: Runner) -> frozenset[Path]:
    """Every file of Debian's glibc, resolved: those stay out of the extensions."""
    return frozenset(Path(p).resolve() for p in debfiles.package_files(runner, GLIBC_PACKAGE)
                     if Path(p).is_file())


def build_binary_extension(spec: Spec, work: Path, out: Path, runner: Runner,
                           glibc: frozenset[Path], version: str, epoch: int) -> dict:
    tree = work / spec.name
    tree.mkdir(parents=True)
    builder = TreeBuilder(tree, runner, glibc)
    for take in spec.takes:
        builder.take(take)
    builder.finish(spec.links)
    info = {**spec.info, "Version": version}
    path = tcz.build_tcz(tree, out, spec.name, spec.deps, info, runner, epoch,
                         log="extensions")
    return {"bytes": path.stat().st_size, "libraries": sorted(builder.libraries)}


def key_material(runner: Runner, kernel) -> dict:
    # the tools that write the bytes are inputs too
    tools = {GLIBC_PACKAGE, "squashfs-tools", "patchelf"}
    packages = sorted({t.package for s in SPECS for t in s.takes} | tools)
    code = [HERE / "extensions.py", HERE / "module_extensions.py", HERE / "debfiles.py",
            Path(tcz.__file__), FILES_DIR]
    return {
        "builder": BUILDER_VERSION,
        "packages": debfiles.versions(runner, packages),
        "code": cache.digest_files(code),
        "kernel": {"release": kernel.release, "key": kernel.path.name},
        "source_date_epoch": debfiles.source_date_epoch(),
    }


def build_extensions(kernel, runner: Runner | None = None) -> Path:
    """The cached folder whose tcz/ holds every stand-in extension with its metadata."""
    runner = runner or Runner(cache.component_dir("logs"), echo=lambda line: None)
    material = key_material(runner, kernel)

    def build(work: Path) -> dict:
        out, trees = work / "tcz", work / "trees"
        glibc = glibc_files(runner)
        sizes = {}
        for spec in SPECS:
            version = debfiles.upstream_version(material["packages"][spec.version_of])
            sizes[f"{spec.name}.tcz"] = build_binary_extension(
                spec, trees, out, runner, glibc, version, material["source_date_epoch"])
        sizes.update(module_extensions.build_module_extensions(
            kernel, trees, out, runner, material["source_date_epoch"]))
        shutil.rmtree(trees)
        return {"extensions": sizes, "kernel_release": kernel.release}

    return cache.cached_build("extensions", material, build)


def summary(path: Path) -> str:
    data = json.loads((path / cache.INFO).read_text())
    return ", ".join(f"{n} {v['bytes'] // 1024} KiB" for n, v in data["extensions"].items())
