"""Reading `packer build -machine-readable`: progress lines, phase times, the verify verdict.

Each line is `timestamp,target,type,data...`; in the data Packer writes commas as
`%!(PACKER_COMMA)` and newlines as a literal `\\n`. The phases are recognised from Packer's own
messages and from the first line each of our scripts prints (a provisioner's start message
comes before the reconnect after the reboot, so the scripts' own lines are the better clock).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# (phase, pattern of the message that starts it), in build order
PHASES = (
    ("boot", re.compile(r"Starting VM")),
    ("ssh", re.compile(r"Waiting for SSH to become available")),
    ("install", re.compile(r"install-to-disk: ")),
    ("reboot", re.compile(r"Provisioning with shell script: \S*packer-shell")),
    ("verify", re.compile(r"verify: ")),
    ("cleanup", re.compile(r"cleanup: ")),
    ("shutdown", re.compile(r"Gracefully halting virtual machine")),
    ("convert", re.compile(r"Converting hard drive")),
)
SCRIPTS = ("install-to-disk: ", "verify: ", "cleanup: ")
VERDICT = re.compile(r"APPLIANCE-VERIFY: (PASS|FAIL)(?: (.*))?$")


@dataclass(frozen=True)
class Line:
    timestamp: int
    kind: str  # "say", "message", "error", or another machine-readable type
    text: str


def parse_line(raw: str) -> Line | None:
    """One machine-readable line; None for anything else (Packer may print plain text)."""
    parts = raw.split(",", 4)
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    if parts[2] == "ui" and len(parts) == 5:
        kind, data = parts[3], parts[4]
    else:
        kind, data = parts[2], ",".join(parts[3:])
    text = data.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "")
    return Line(int(parts[0]), kind, text)


def script_text(text: str) -> str:
    """`    qemu.appliance: verify: ...` -> `verify: ...`."""
    return re.sub(r"^\s*(==> )?qemu(\.appliance)?: ", "", text.strip())


# install-to-disk.sh names the filesystem the installed system finds itself by
ROOT_FS = re.compile(r"install-to-disk: root filesystem UUID=([0-9a-f-]{36})\b")


@dataclass
class Progress:
    """Feeds on Packer's lines; `show` receives what a person should see."""

    show: Callable[[str], None]
    started: dict[str, int] = field(default_factory=dict)
    end: int | None = None
    verdict: str | None = None  # "PASS" or "FAIL"
    reason: str = ""
    errors: list[str] = field(default_factory=list)
    root_fs: str | None = None  # "UUID=...": how the installed system names its disk

    def feed(self, raw: str) -> None:
        line = parse_line(raw)
        if line is None:
            return
        self.end = line.timestamp
        if line.kind not in ("say", "message", "error"):
            return
        for text in line.text.splitlines():
            self._text(line, script_text(text))

    def _text(self, line: Line, text: str) -> None:
        if not text:
            return
        for phase, pattern in PHASES:
            if phase not in self.started and pattern.search(text):
                self.started[phase] = line.timestamp
                self.show(f"packer: phase {phase}")
        if match := ROOT_FS.search(text):
            self.root_fs = f"UUID={match.group(1)}"
        if match := VERDICT.search(text):
            self.verdict, self.reason = match.group(1), match.group(2) or ""
        if line.kind == "error" or (text.startswith(SCRIPTS) and "ERROR:" in text):
            self.errors.append(text)
        if line.kind in ("say", "error") or VERDICT.search(text) or text.startswith(SCRIPTS):
            self.show(f"packer: {text}")

    def first_error(self) -> str | None:
        """Our scripts' own ERROR line if there is one (it says what and why), else Packer's."""
        ours = [e for e in self.errors if e.startswith(SCRIPTS) and "ERROR:" in e]
        return (ours or self.errors or [None])[0]

    def phases(self) -> dict[str, int]:
        """Seconds per phase (a phase lasts until the next one seen, the last until the end)."""
        seen = sorted(self.started.items(), key=lambda item: item[1])
        result = {}
        for i, (phase, start) in enumerate(seen):
            stop = seen[i + 1][1] if i + 1 < len(seen) else (self.end or start)
            result[phase] = stop - start
        return result
