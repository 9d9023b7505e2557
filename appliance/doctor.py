"""`pipeline.py doctor`: is this host able to build, and how (KVM or TCG, which Packer)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import PipelineError
from appliance.run import install_hint
from appliance.tools import VERSION_ARGV, packer_generation, parse_version, tool_version
from appliance.vm.qemu import accelerator

MIN_FREE_GIB = 10
# tool -> what it is needed for; "optional" tools only serve tests and benchmarks
TOOLS = {
    "packer": "the packer stage",
    "qemu-system-x86_64": "the packer stage and boot tests",
    "qemu-img": "the export stage",
    "mksquashfs": "the extensions stage",
    "unsquashfs": "the extensions stage checks",
    "skopeo": "the extensions stage: container images for faasd",
    "ssh-keygen": "the build SSH key",
    "xorriso": "optional: ISO checks in tests and benchmarks",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def check_tool(tool: str, purpose: str) -> Check:
    required = not purpose.startswith("optional")
    if not shutil.which(tool):
        return Check(tool, False, f"missing ({purpose}); {install_hint(tool)}", required)
    version = tool_version(VERSION_ARGV.get(tool, (tool, "--version")))
    if tool == "packer":
        parsed = parse_version(version)
        version += f" [{packer_generation(parsed)}]" if parsed else " [version not understood]"
    return Check(tool, True, version, required)


def existing_ancestor(path: Path) -> Path:
    """`doctor` only reads: the free space of a build folder not made yet is its parent's."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(path: Path) -> Check:
    free = shutil.disk_usage(existing_ancestor(path)).free / 2**30
    ok = free >= MIN_FREE_GIB
    detail = f"{free:.0f} GiB free in {path}" + ("" if ok else f" (need >= {MIN_FREE_GIB} GiB)")
    return Check("disk space", ok, detail)


def check_accel() -> Check:
    try:
        accel = accelerator()
    except PipelineError as exc:
        return Check("accelerator", False, exc.message)
    cached = f" [cached in {accel.cached}; --reprobe probes again]" if accel.cached else ""
    if accel.name == "kvm" and not accel.verified:
        # KVM that runs a boot sector may still hang a real kernel (nested, PVM hosts)
        return Check("accelerator", False, f"kvm: unverified: {accel.reason}{cached}",
                     required=False)
    return Check(f"accelerator: {accel.name}", True, accel.reason + cached)


# The kernel stage's host tools (the Makefile's build-essential bc bison flex libelf-dev):
# a kernel tree's `make modules_prepare` needs all of them.
KERNEL_TOOLS = ("make", "gcc", "bc", "bison", "flex")
LIBELF_HEADERS = (Path("/usr/include/gelf.h"), Path("/usr/local/include/gelf.h"))


def check_kernel_tools(recipe) -> list[Check]:
    """The kernel stage's tools, when the recipe makes it build (modules or a full kernel)."""
    from appliance.stages.kernel import (
        stage as kernel_build,  # heavy imports: only when a recipe is at hand
    )

    why_idle = kernel_build.idle_reason(recipe)
    if why_idle:
        return []
    purpose = "the kernel stage (kernel.modules / kernel.rebuild)"
    checks = [check_tool(tool, purpose) for tool in KERNEL_TOOLS]
    found = next((h for h in LIBELF_HEADERS if h.is_file()), None)
    checks.append(Check("libelf", found is not None,
                        f"{found}" if found else f"gelf.h missing ({purpose}); install it "
                        "with `apt-get install libelf-dev` (or run `make deps`)"))
    return checks


def run_checks(build_root: Path, recipe=None) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    checks += [check_tool(tool, purpose) for tool, purpose in TOOLS.items()]
    if recipe is not None:
        checks += check_kernel_tools(recipe)
    checks.append(check_disk(build_root))
    if shutil.which("qemu-system-x86_64"):
        checks.append(check_accel())
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        status = "ok" if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"{status:<4}  {c.name:<{width}}  {c.detail}")
    return "\n".join(lines)


def healthy(checks: list[Check]) -> bool:
    return all(c.ok or not c.required for c in checks)
