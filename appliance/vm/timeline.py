"""The boot timeline: `APPLIANCE-PHASE <name> <seconds> [<detail>]` lines on the serial console.

The guest's boot scripts (iso-remaster/bootsync.sh, bootlocal.sh and the services' init
scripts) print one such line at each fixed point of a boot, `seconds` being the guest's
/proc/uptime. These pure functions read them back: the phases of each boot in a serial log,
the checks (canonical order, each phase at most once per boot) and the breakdown text that
`test-image` prints and `make bench` tabulates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The fixed points, in the order a boot reaches them. `firstboot` is printed only by an
# image that has a first-boot script, so any phase may be missing from a boot.
PHASES = ("kernel", "extensions", "bootsync", "firstboot", "cgroups", "containerd", "images",
          "provider", "gateway", "ready")

# Anywhere in a line: kernel messages may share the console line the shell wrote into.
_LINE = re.compile(r"APPLIANCE-PHASE[ \t]+(\S+)[ \t]+(\d+(?:\.\d+)?)(?:[ \t]+([^\r\n]*?))?[ \t]*$")


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float  # since the guest's kernel started
    detail: str = ""


def phase_of(line: str) -> Phase | None:
    match = _LINE.search(line)
    if match is None:
        return None
    name, secs, detail = match.groups()
    return Phase(name, float(secs), detail or "")


def parse(serial: str) -> list[list[Phase]]:
    """The phases of each boot in `serial`, in the order printed.

    A boot ends where the next begins: at a `kernel` phase after any other phase, or where
    the seconds go back (the guest's uptime restarts at each boot)."""
    boots: list[list[Phase]] = []
    for line in serial.replace("\r", "").splitlines():
        phase = phase_of(line)
        if phase is None:
            continue
        current = boots[-1] if boots else None
        if (current is None or (phase.name == "kernel" and current)
                or phase.seconds < current[-1].seconds):
            current = []
            boots.append(current)
        current.append(phase)
    return boots


def problems(boot: list[Phase]) -> list[str]:
    """What is wrong with one boot's phases: unknown, repeated or out of canonical order."""
    found = []
    seen: set[str] = set()
    last = -1
    for phase in boot:
        if phase.name not in PHASES:
            found.append(f"unknown phase {phase.name!r}")
            continue
        if phase.name in seen:
            found.append(f"phase {phase.name!r} printed more than once")
            continue
        seen.add(phase.name)
        rank = PHASES.index(phase.name)
        if rank < last:
            found.append(f"phase {phase.name!r} after {PHASES[last]!r}")
        last = max(last, rank)
    return found


def detail_field(phase: Phase, key: str) -> str | None:
    """`key=value` out of a phase's detail (`imported=0 present=3` -> "0" for `imported`)."""
    for word in phase.detail.split():
        k, sep, value = word.partition("=")
        if sep and k == key:
            return value
    return None


def find(boot: list[Phase], name: str) -> Phase | None:
    return next((p for p in boot if p.name == name), None)


def breakdown(boot: list[Phase]) -> str:
    """`kernel 1.9 | extensions 11.2 (+9.3) | ... | ready 38.0 (+2.1)`: each phase's seconds
    and its delta from the previous phase."""
    parts = []
    previous: Phase | None = None
    for phase in boot:
        text = f"{phase.name} {phase.seconds:.1f}"
        if previous is not None:
            text += f" (+{phase.seconds - previous.seconds:.1f})"
        if phase.detail:
            text += f" [{phase.detail}]"
        parts.append(text)
        previous = phase
    return " | ".join(parts) if parts else "no APPLIANCE-PHASE line"
