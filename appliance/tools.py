"""Host tool versions: for stage keys, `doctor` and the build manifest."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

# argv that prints each tool's version
VERSION_ARGV = {
    "packer": ("packer", "version"),
    "qemu-system-x86_64": ("qemu-system-x86_64", "--version"),
    "qemu-img": ("qemu-img", "--version"),
    "mksquashfs": ("mksquashfs", "-version"),
    "unsquashfs": ("unsquashfs", "-version"),
    "ssh-keygen": ("ssh", "-V"),
    "xorriso": ("xorriso", "-version"),
    "skopeo": ("skopeo", "--version"),
    "shellcheck": ("shellcheck", "--version"),
}


# Reading a version must not phone home: `packer version` asks HashiCorp's checkpoint
# service for the latest release unless CHECKPOINT_DISABLE is set (hashicorp/go-checkpoint).
CHECKPOINT_OFF = {"CHECKPOINT_DISABLE": "1"}


@functools.cache
def tool_version(argv: tuple[str, ...]) -> str:
    """The first non-empty line a tool prints about its version, or 'missing'.

    Read-only and quick, so it bypasses the logging runner (it runs for every stage key)."""
    if not shutil.which(argv[0]):
        return "missing"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, **CHECKPOINT_OFF}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or "") + (proc.stderr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if argv[0] == "shellcheck":  # "version: 0.9.0" is on the second line
        lines = [line for line in lines if line.startswith("version:")] or lines
    return lines[0] if lines else "unknown"


def parse_version(text: str) -> tuple[int, ...] | None:
    """'Packer v1.6.6' -> (1, 6, 6)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def packer_generation(version: tuple[int, ...]) -> str:
    """Which template shape a Packer version needs (docs/architecture.md#packer)."""
    if version < (1, 7):
        return "1.6: no required_plugins block; the qemu builder is bundled"
    if version < (1, 10):
        return ">=1.7: plugins file + `packer init`; the qemu builder is still bundled"
    return ">=1.10: plugins file + `packer init` required (the qemu builder is no longer bundled)"
