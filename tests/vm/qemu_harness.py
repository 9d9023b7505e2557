"""A small QEMU harness for vm tests: boot, watch the serial console, type, read the screen.

QEMU runs through appliance.run.Runner (in a thread: Runner waits for the exit) in its own
process group, with `-display none`, the serial port written to a file and an HMP monitor
on a unix socket. Tests wait for a regex on the serial log or on the VGA text screen (read
from guest memory at 0xb8000 with HMP `xp`: Tiny Core's isolinux prompt is on the screen
only), never for a fixed time; keys are typed with HMP `sendkey`, as Packer types through
VNC. `stop()` quits QEMU and kills its process group if it does not go.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.run import Runner
from appliance.vm.qemu import accel_option

POLL_S = 0.2
SCREEN_ADDR = 0xB8000
SCREEN_COLS, SCREEN_ROWS = 80, 25
HMP_PROMPT = b"(qemu) "
UNIX_PATH_MAX = 100
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")

# HMP sendkey names of the characters a boot line needs (shift-x for the shifted ones).
_KEYS = {" ": "spc", "-": "minus", "=": "equal", "/": "slash", ".": "dot", ",": "comma",
         ";": "semicolon", "\n": "ret", "\\": "backslash", "'": "apostrophe"}  # fmt: skip
_SHIFTED = {":": "semicolon", "_": "minus", "+": "equal", "|": "backslash", '"': "apostrophe",
            "@": "2", "?": "slash"}  # fmt: skip


def key_name(char: str) -> str:
    """The HMP sendkey name of one character."""
    if char.isascii() and (char.isdigit() or char.islower()):
        return char
    if char.isascii() and char.isupper():
        return f"shift-{char.lower()}"
    if char in _KEYS:
        return _KEYS[char]
    if char in _SHIFTED:
        return f"shift-{_SHIFTED[char]}"
    raise ValueError(f"no sendkey name for {char!r}")


def screen_from_xp(output: str) -> str:
    """VGA text (80x25 lines) from HMP `xp /2000hx 0xb8000` (each cell: attribute, char)."""
    cells = [int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{4})", output)]
    chars = "".join(chr(c & 0xFF) if 32 <= (c & 0xFF) < 127 else " " for c in cells)
    lines = [chars[i : i + SCREEN_COLS].rstrip() for i in range(0, len(chars), SCREEN_COLS)]
    return "\n".join(lines)


@dataclass
class VM:
    """One QEMU guest. Use as a context manager so that it is always stopped."""

    workdir: Path
    memory_mb: int = 512
    cdrom: Path | None = None
    disks: list[Path] = field(default_factory=list)  # raw (or *.qcow2) images on IDE, sda first
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    boot: str = "c"  # "d": from the CD
    hostfwd: list[tuple[int, int]] = field(default_factory=list)  # (host port, guest port)
    timeout_s: float = 1200  # QEMU is killed after this, whatever happens
    name: str = "vm"

    def __post_init__(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_log = self.workdir / f"{self.name}-serial.log"
        self.monitor_path = self.workdir / f"{self.name}-monitor.sock"
        if len(str(self.monitor_path)) > UNIX_PATH_MAX:  # sun_path holds 108 bytes
            self.monitor_path = Path(tempfile.mkdtemp(prefix="qemu-")) / "monitor.sock"
        self.pidfile = self.workdir / f"{self.name}.pid"
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.result = None
        self.error: Exception | None = None

    def argv(self) -> list[str]:
        """The QEMU command line (pure)."""
        argv = [
            "qemu-system-x86_64", "-accel", accel_option("tcg"), "-machine", "pc", "-smp", "1",
            "-m", str(self.memory_mb), "-display", "none", "-vga", "std", "-no-reboot",
            "-serial", f"file:{self.serial_log}",
            "-monitor", f"unix:{self.monitor_path},server=on,wait=off",
            "-pidfile", str(self.pidfile), "-boot", self.boot,
        ]  # fmt: skip
        for index, disk in enumerate(self.disks):
            fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
            argv += ["-drive", f"file={disk},format={fmt},if=ide,index={index},media=disk"]
        if self.cdrom:
            argv += [
                "-drive",
                f"file={self.cdrom},format=raw,if=ide,index=2,media=cdrom,readonly=on",
            ]
        if self.kernel:
            argv += ["-kernel", str(self.kernel)]
            argv += ["-initrd", str(self.initrd)] if self.initrd else []
            argv += ["-append", self.append or ""]
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.hostfwd)
        argv += ["-netdev", f"user,id=net0{fwd}", "-device", "e1000,netdev=net0"]
        return argv

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> VM:
        for path in (self.serial_log, self.monitor_path, self.pidfile):
            path.unlink(missing_ok=True)
        self.serial_log.touch()
        runner = Runner(self.workdir, echo=lambda line: None)
        self._thread = threading.Thread(target=self._run, args=(runner,), daemon=True)
        self._thread.start()
        self._wait(lambda: self.monitor_path.exists() and self.pidfile.exists(), 30,
                   "QEMU did not start (see its log)")  # fmt: skip
        return self

    def _run(self, runner: Runner) -> None:
        try:
            self.result = runner.run(self.argv(), log=f"{self.name}-qemu",
                                     timeout=self.timeout_s, check=False)  # fmt: skip
        except Exception as exc:  # reported by _wait/tail in the test's thread
            self.error = exc

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Quit QEMU; kill its process group if it is still there a few seconds later."""
        if self._thread is None:
            return
        try:
            if self.running():
                self.hmp("quit", expect_prompt=False)
        except OSError:
            pass
        self._thread.join(timeout=10)
        if self._thread.is_alive() and self.pidfile.exists():
            try:
                os.killpg(int(self.pidfile.read_text().strip()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
            self._thread.join(timeout=10)
        if self._sock:
            self._sock.close()
            self._sock = None

    def wait_stopped(self, timeout: float) -> bool:
        """True once QEMU has exited by itself (a guest power-off: -no-reboot) in time."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running()

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- serial console -----------------------------------------------------------------

    def serial_text(self) -> str:
        return self.serial_log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first match of `pattern` (multiline) on the serial console, within timeout."""
        regex = re.compile(pattern, re.MULTILINE)
        found: list[re.Match] = []

        def seen() -> bool:
            match = regex.search(self.serial_text())
            if match:
                found.append(match)
            return bool(match)

        self._wait(seen, timeout, f"no {pattern!r} on the serial console")
        return found[0]

    # --- monitor, screen, keyboard ------------------------------------------------------

    def hmp(self, command: str, expect_prompt: bool = True) -> str:
        """Runs one HMP command; its output without the echo and the prompt."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(10)
            self._sock.connect(str(self.monitor_path))
            self._read_to_prompt()  # the banner
        self._sock.sendall(command.encode() + b"\n")
        if not expect_prompt:
            return ""
        raw = _ANSI.sub(b"", self._read_to_prompt()).decode(errors="replace")
        lines = raw.replace("\r", "").split("\n")
        return "\n".join(line for line in lines[1:] if line != "(qemu) ").strip()

    def _read_to_prompt(self) -> bytes:
        data = b""
        while not data.endswith(HMP_PROMPT):
            chunk = self._sock.recv(65536)  # type: ignore[union-attr]
            if not chunk:
                raise OSError("the QEMU monitor closed")
            data += chunk
        return data

    def screen(self) -> str:
        """The VGA text screen, as 25 lines of at most 80 characters."""
        cells = SCREEN_COLS * SCREEN_ROWS
        return screen_from_xp(self.hmp(f"xp /{cells}hx {SCREEN_ADDR:#x}"))

    def wait_for_screen(self, pattern: str, timeout: float) -> str:
        """The screen once `pattern` (multiline regex) is on it."""
        regex = re.compile(pattern, re.MULTILINE)
        shown: list[str] = []

        def seen() -> bool:
            shown[:] = [self.screen()]
            return bool(regex.search(shown[0]))

        self._wait(seen, timeout, f"no {pattern!r} on the screen")
        return shown[0]

    def send_keys(self, text: str, echo_timeout: float = 20) -> None:
        """Types `text` key by key; each printable key is sent once the previous one shows
        on the screen (the BIOS keyboard buffer holds only 15 keys, and TCG is slow)."""
        typed = ""
        for char in text:
            self.hmp(f"sendkey {key_name(char)}")
            if char == "\n":
                typed = ""
                continue
            typed += char
            if typed.strip():  # the screen's lines are read without trailing blanks
                tail = re.escape(typed.rstrip()[-30:])
                self.wait_for_screen(tail + r"$", echo_timeout)

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.running():
                raise AssertionError(f"{what}: QEMU exited\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} after {timeout:g} s\n{self.tail()}")
            time.sleep(POLL_S)

    def tail(self, lines: int = 40) -> str:
        """The end of the serial console (and QEMU's own output once it has exited)."""
        text = self.serial_text() if self.serial_log.exists() else ""
        out = "serial console tail:\n" + "\n".join(text.splitlines()[-lines:])
        if self.error is not None:
            out += f"\nQEMU could not run: {self.error}"
        if self.result is not None and self.result.output:
            out += f"\nQEMU exited ({self.result.returncode}):\n{self.result.output[-2000:]}"
        return out
