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


def check_disk(path: Path) -> Check:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free / 2**30
    ok = free >= MIN_FREE_GIB
    detail = f"{free:.0f} GiB free in {path}" + ("" if ok else f" (need >= {MIN_FREE_GIB} GiB)")
    return Check("disk space", ok, detail)


def check_accel() -> Check:
    try:
        accel = accelerator()
    except PipelineError as exc:
        return Check("accelerator", False, exc.message)
    return Check(f"accelerator: {accel.name}", True, accel.reason)


def run_checks(build_root: Path) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    checks += [check_tool(tool, purpose) for tool, purpose in TOOLS.items()]
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
