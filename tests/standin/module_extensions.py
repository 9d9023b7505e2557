"""netfilter-KERNEL.tcz and original-modules-KERNEL.tcz from the stand-in kernel's modules.

Which module goes where follows tc11 (DESIGN.md section 9, kernel/options.toml `ships_in`):
netfilter-KERNEL carries everything under net/netfilter, net/ipv4/netfilter and
net/ipv6/netfilter; original-modules-KERNEL carries bridge, stp, llc, br_netfilter and veth.
Each also carries what its modules need (modules.dep), unless the base initramfs has it
(`ships_in = "corepure64.gz"`) or an earlier extension does, which then becomes a .dep.
Modules sit under usr/local/lib/modules/<release>/kernel/, as in Tiny Core's extensions;
tce-load runs depmod after loading an extension that carries modules.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.run import Runner
from appliance.tinycore import tcz
from tests.standin import kernel_options

BASE = "corepure64.gz"


@dataclass(frozen=True)
class ModuleExtension:
    name: str  # without -KERNEL
    dirs: tuple[str, ...]  # every module below these (paths as in modules.dep)
    description: str

    @property
    def ships_in(self) -> str:
        return f"{self.name}-KERNEL.tcz"


MODULE_EXTENSIONS = {
    e.name: e for e in (
        ModuleExtension("netfilter", ("kernel/net/netfilter/", "kernel/net/ipv4/netfilter/",
                                      "kernel/net/ipv6/netfilter/"),
                        "netfilter kernel modules: conntrack, NAT, xt_* matches and targets"),
        ModuleExtension("original-modules", (),
                        "kernel modules for containers: bridge, stp, llc, br_netfilter, veth"),
    )
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
    """kernel/net/netfilter/nf_conntrack.ko(.xz) -> nf_conntrack (modprobe's spelling)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.[a-z]+)?$", "", base).replace("-", "_")


@dataclass(frozen=True)
class Planned:
    modules: tuple[str, ...]  # paths as in modules.dep
    deps: tuple[str, ...]  # other module extensions, as KERNEL names


def plan(graph: Mapping[str, list[str]], ships_in: Mapping[str, str]) -> dict[str, Planned]:
    """Which modules each extension carries, and which extensions it then depends on (pure).

    ships_in maps a module name to where tc11 ships it (kernel/options.toml)."""
    by_name = {module_name(p): p for p in graph}
    base = {p for p, n in ((p, module_name(p)) for p in graph) if ships_in.get(n) == BASE}
    claimed: dict[str, str] = {}  # module path -> extension name
    result = {}
    for ext in MODULE_EXTENSIONS.values():
        roots = {p for p in graph if p.startswith(ext.dirs)}
        roots |= {by_name[n] for n, where in ships_in.items()
                  if where == ext.ships_in and n in by_name}
        wanted = _closure(roots, graph) - base
        mine = sorted(wanted - set(claimed))
        deps = sorted({claimed[p] for p in wanted if p in claimed})
        claimed.update({p: ext.name for p in mine})
        result[ext.name] = Planned(tuple(mine), tuple(f"{d}-KERNEL.tcz" for d in deps))
    return result


def _closure(roots: Iterable[str], graph: Mapping[str, list[str]]) -> set[str]:
    # modules.dep already lists every module a module needs, not only the direct ones
    return set(roots) | {need for root in roots for need in graph.get(root, [])}


def tc11_placement() -> dict[str, str]:
    """module name -> where tc11 ships it, from kernel/options.toml."""
    return {o.module: o.ships_in for o in kernel_options.load_options().options
            if o.module and o.ships_in}


def build_module_extensions(kernel, work: Path, out: Path, runner: Runner,
                            source_date_epoch: int) -> dict[str, dict]:
    """Build every module extension for `kernel` (tests.standin.kernel.StandinKernel)."""
    graph = parse_modules_dep((kernel.moddir / "modules.dep").read_text(encoding="utf-8"))
    planned = plan(graph, tc11_placement())
    built = {}
    for name, what in planned.items():
        filename = f"{name}-{kernel.release}"
        tree = work / filename
        dest = tree / "usr/local/lib/modules" / kernel.release
        for rel in what.modules:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kernel.moddir / rel, dest / rel)
            (dest / rel).chmod(0o644)
        for path in [tree, *tree.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        info = {
            "Description": MODULE_EXTENSIONS[name].description,
            "Version": kernel.release, "Author": "Linux kernel developers",
            "Original-site": "https://www.kernel.org/", "Copying-policy": "GPLv2",
            "Comments": "STAND-IN: modules of the stand-in kernel (Debian's linux-source-6.1\n"
                        "configured like 5.4.3-tinycore64). Modules:\n"
                        + textwrap.fill(" ".join(sorted(module_name(m) for m in what.modules)),
                                        60),
        }
        path = tcz.build_tcz(tree, out, filename, what.deps, info, runner, source_date_epoch,
                             log="extensions")
        built[path.name] = {"bytes": path.stat().st_size, "modules": len(what.modules)}
    return built
