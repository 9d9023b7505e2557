"""The stand-in kernel's modules sorted into extensions and base as Tiny Core 11 sorts them.

Source: tinycorelinux/sorter `sorter.sh` @ bf13d13 ("Unify ipv6 and netfilter", 2019-12-17,
before 11.0's 5.4.3 kernel). It takes the `modules_install` tree with every module gzipped,
moves each group of folders below lib/modules/KERNEL/kernel/ into one extension (first group
wins: a moved file is gone for later groups), packs what is left into the base initramfs, and
makes `original-modules-KERNEL.tcz`, an empty squashfs (only lib/) whose .dep is every
module extension. SORTER_TABLE below is that table, the one place the stand-in keeps it.
Groups carry no .dep between them (sorter writes none); nothing the stand-in kernel builds
needs a module of another group, and tc11 does not promise more.
Modules sit under usr/local/lib/modules/<release>/kernel/ in the extensions, as in Tiny
Core's; tce-load runs depmod after loading an extension that carries modules.
"""

from __future__ import annotations

import gzip
import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from appliance.run import Runner
from appliance.tinycore import tcz

META = "original-modules"

# (extension without -KERNEL, shell globs below kernel/), in sorter.sh's order.
SORTER_TABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kvm", ("arch/x86/kvm/*",)),
    ("filesystems", ("fs/[bcehjmrux]*/*", "fs/nfsd/*", "fs/nfs", "fs/nilfs2")),
    ("alsa-modules", ("sound",)),
    ("bluetooth", ("net/bluetooth", "drivers/bluetooth")),
    ("net-bridging", ("net/bridge",)),
    ("net-sched", ("net/sched",)),
    ("ipv6-netfilter", ("net/ipv6", "net/ipv4", "net/netfilter")),
    ("wireless", ("net/mac80211", "net/wireless", "drivers/net/wireless")),
    ("nouveau", ("drivers/gpu/drm/nouveau",)),
    ("graphics", ("drivers/char/agp", "drivers/gpu", "drivers/usb/misc/sisusbvga")),
    ("firewire", ("drivers/firewire",)),
    ("hwmon", ("drivers/hwmon",)),
    ("i2c", ("drivers/i2c",)),
    ("raid-dm", ("drivers/md", "lib/raid*")),
    ("input-joystick", ("drivers/input/joy*", "drivers/input/gameport")),
    ("input-tablet-touchscreen", ("drivers/input/tablet", "drivers/input/touchscreen")),
    ("v4l-dvb", ("drivers/media", "drivers/usb/misc/isight*")),
    ("mtd", ("drivers/mtd",)),
    ("usb-serial", ("drivers/usb/misc/uss*", "drivers/usb/serial")),
    ("leds", ("drivers/leds",)),
    ("wimax", ("net/wimax", "drivers/net/wimax")),
    ("pci-hotplug", ("drivers/pci/hotplug",)),
    ("thinkpad-acpi", ("drivers/platform/x86/thinkpad_acpi*",)),
    ("watchdog", ("drivers/watchdog",)),
    ("ax25", ("net/ax25", "net/rose", "net/netrom", "drivers/net/hamradio")),
    ("scsi", ("drivers/scsi", "drivers/message")),
    ("l2tp", ("net/l2tp",)),
    ("sctp", ("net/sctp",)),
)
# Modules of a group that sorter leaves in the base (file-name globs): Hyper-V's storage
# driver and the FC transport, which the base needs to boot on Hyper-V.
KEPT_IN_BASE = {"scsi": ("hv_*", "scsi_transport_fc*")}
DESCRIPTIONS = {
    "net-bridging": "kernel modules: Ethernet bridging (bridge, br_netfilter)",
    "ipv6-netfilter": "kernel modules: IPv6, netfilter (conntrack, NAT, iptables, xt_*)",
}


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep: `kernel/a.ko: kernel/b.ko kernel/c.ko` -> {a: [b, c]} (all of a's needs)."""
    graph = {}
    for line in text.splitlines():
        if ":" in line:
            module, needs = line.split(":", 1)
            graph[module.strip()] = needs.split()
    return graph


def module_name(path: str) -> str:
    """kernel/net/netfilter/nf_conntrack.ko(.gz) -> nf_conntrack (modprobe's spelling)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.[a-z]+)?$", "", base).replace("-", "_")


def glob_claims(pattern: str, rel: str) -> bool:
    """Whether `find kernel/<pattern>` (a shell glob: * never crosses /) finds rel."""
    want, parts = pattern.split("/"), rel.split("/")
    return len(parts) >= len(want) and all(map(fnmatchcase, parts, want))


def extension_of(rel: str) -> str | None:
    """The extension sorter moves a module to (rel: below kernel/), None for the base."""
    for name, patterns in SORTER_TABLE:
        if any(glob_claims(p, rel) for p in patterns):
            kept = KEPT_IN_BASE.get(name, ())
            return None if any(fnmatchcase(rel.rsplit("/", 1)[-1], k) for k in kept) else name
    return None


@dataclass(frozen=True)
class Plan:
    extensions: dict[str, tuple[str, ...]]  # name -> module paths as in modules.dep
    base: tuple[str, ...]

    @property
    def meta_dep(self) -> list[str]:
        """original-modules' .dep: every module extension (sorter: `ls *.tcz`)."""
        return sorted(f"{name}-KERNEL.tcz" for name in self.extensions)


def plan(graph: Mapping[str, Iterable[str]]) -> Plan:
    """Which modules each extension carries and which stay in the base (pure)."""
    extensions: dict[str, list[str]] = {}
    base = []
    for path in sorted(graph):
        name = extension_of(path.removeprefix("kernel/"))
        if name is None:
            base.append(path)
        else:
            extensions.setdefault(name, []).append(path)
    return Plan({n: tuple(m) for n, m in sorted(extensions.items())}, tuple(base))


def gzipped_tree(moddir: Path, dest: Path, runner: Runner, release: str) -> Path:
    """A copy of lib/modules/<release>/ with every module gzipped, as sorter takes it, and
    busybox's depmod (Debian's kmod reads no .ko.gz; Tiny Core's own depmod is busybox's)."""
    out = dest / "lib" / "modules" / release
    for ko in sorted(moddir.rglob("*.ko")):
        target = out / f"{ko.relative_to(moddir)}.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        # mtime 0 and no name, as `gzip -n`: the same module always gives the same bytes
        target.write_bytes(gzip.compress(ko.read_bytes(), compresslevel=9, mtime=0))
        target.chmod(0o644)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (moddir / name).is_file():
            shutil.copyfile(moddir / name, out / name)
    depmod(runner, dest, release)
    return out


def depmod(runner: Runner, root: Path, release: str) -> None:
    runner.run(["busybox", "depmod", "-b", root, release], log="modules")


def _info(name: str, release: str, modules: Iterable[str]) -> dict[str, str]:
    return {
        "Description": DESCRIPTIONS.get(name, f"kernel modules: {name}"),
        "Version": release, "Author": "Linux kernel developers",
        "Original-site": "https://www.kernel.org/", "Copying-policy": "GPLv2",
        "Comments": "STAND-IN: modules of the stand-in kernel (Debian's linux-source-6.1\n"
                    "configured like 5.4.3-tinycore64), sorted as tinycorelinux/sorter\n"
                    "sorter.sh @ bf13d13 does. Modules:\n"
                    + textwrap.fill(" ".join(sorted(module_name(m) for m in modules)) or "none",
                                    60),
    }


def build_module_extensions(kernel, work: Path, out: Path, runner: Runner,
                            source_date_epoch: int) -> dict[str, dict]:
    """Every module extension of `kernel` (tests.standin.kernel.StandinKernel), and the
    original-modules meta-extension."""
    moddir = gzipped_tree(kernel.moddir, work / "gz", runner, kernel.release)
    planned = plan(parse_modules_dep((moddir / "modules.dep").read_text(encoding="utf-8")))
    built = {}
    for name, modules in planned.extensions.items():
        filename = f"{name}-{kernel.release}"
        tree = work / filename
        dest = tree / "usr/local/lib/modules" / kernel.release
        for rel in modules:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(moddir / rel, dest / rel)
            (dest / rel).chmod(0o644)
        _dirs_755(tree)
        path = tcz.build_tcz(tree, out, filename, [], _info(name, kernel.release, modules),
                             runner, source_date_epoch, log="extensions")
        built[path.name] = {"bytes": path.stat().st_size, "modules": len(modules)}
    built.update(_meta_extension(kernel.release, planned, work, out, runner, source_date_epoch))
    return built


def _meta_extension(release: str, planned: Plan, work: Path, out: Path, runner: Runner,
                    source_date_epoch: int) -> dict[str, dict]:
    """original-modules-KERNEL.tcz: only lib/, its .dep every module extension."""
    tree = work / f"{META}-{release}"
    (tree / "lib").mkdir(parents=True)
    _dirs_755(tree)
    info = {**_info(META, release, []),
            "Description": "meta-extension: depends on every kernel module extension"}
    path = tcz.build_tcz(tree, out, f"{META}-{release}", planned.meta_dep, info, runner,
                         source_date_epoch, log="extensions")
    return {path.name: {"bytes": path.stat().st_size, "modules": 0}}


def _dirs_755(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
