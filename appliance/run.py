"""The one runner for every external program.

argv lists only; each command is logged as `+ cmd`; output goes line by line to a log file
(and to the console when streaming); children live in their own process group, which is
killed on Ctrl-C or timeout so no QEMU outlives the pipeline.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance import log
from appliance.errors import ToolError

# Debian package that provides each tool we call, for the "not found" hint.
TOOL_PACKAGES = {
    "packer": "packer",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debugfs": "e2fsprogs",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "xorriso": "xorriso",
    "shellcheck": "shellcheck",
    "skopeo": "skopeo",
    "xmllint": "libxml2-utils",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "make": "make",
    "gcc": "build-essential",
    "cpio": "cpio",
    "patchelf": "patchelf",
    "busybox": "busybox-static",
    "isohybrid": "syslinux-utils",
    "extlinux": "extlinux",
    "mkfs.ext4": "e2fsprogs",
    "modinfo": "kmod",
    "depmod": "kmod",
    "bc": "bc",
    "flex": "flex",
    "bison": "bison",
}

TAIL_LINES = 30
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration: float


def format_argv(argv: Sequence[str]) -> str:
    return shlex.join(os.fspath(a) for a in argv)


def child_env(env: dict[str, str | None] | None) -> dict[str, str] | None:
    """The environment of a child: ours with `env` over it; a None value removes the name
    (mksquashfs refuses SOURCE_DATE_EPOCH next to its own time options, for instance)."""
    if env is None:
        return None
    merged = {**os.environ, **env}
    return {k: v for k, v in merged.items() if v is not None}


def install_hint(tool: str) -> str:
    package = TOOL_PACKAGES.get(Path(tool).name)
    if package:
        return f"install it with `apt-get install {package}` (or run `make deps`)"
    return "install it and make sure it is on PATH (or run `make deps`)"


def require_tool(tool: str) -> str:
    """Return the absolute path of `tool`, or raise ToolError naming its package."""
    found = shutil.which(tool)
    if not found:
        raise ToolError(f"required tool '{tool}' not found", install_hint(tool))
    return found


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left of it.

    The final SIGKILL also reaches grandchildren that ignored SIGTERM after the direct
    child exited (a QEMU started by Packer, for instance)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Runner:
    """Runs commands; `log_dir/<log>.log` receives every line of every command."""

    def __init__(self, log_dir: Path | None = None, echo: Callable[[str], None] | None = None):
        self.log_dir = log_dir
        self.echo = echo or log.command

    def log_path(self, log: str | None) -> Path | None:
        if self.log_dir is None or log is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{log}.log"

    def run(
        self,
        argv: Sequence[str | os.PathLike],
        *,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,
        log: str | None = None,
        stream: bool = False,
        timeout: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Result:
        """Run argv; raise ToolError on a missing tool, a non-zero exit, or a timeout."""
        argv = [os.fspath(a) for a in argv]
        require_tool(argv[0])
        shown = format_argv(argv)
        log_path = self.log_path(log)
        self.echo(f"+ {shown}")
        with open(log_path, "a", encoding="utf-8") if log_path else _NullFile() as logf:
            logf.write(f"+ {shown}\n")
            logf.flush()
            result = self._spawn(argv, cwd, env, timeout, stdin, logf, stream, on_line)
        if result.returncode != 0 and check:
            raise self._failure(result, timeout, log_path)
        return result

    def start(self, argv: Sequence[str | os.PathLike], *, cwd: Path | None = None,
              env: dict[str, str | None] | None = None, log: str | None = None) -> Background:
        """Start a long-running program in its own process group; output goes to its log."""
        argv = [os.fspath(a) for a in argv]
        require_tool(argv[0])
        log_path = self.log_path(log)
        self.echo(f"+ {format_argv(argv)} &")
        out = open(log_path, "a", encoding="utf-8") if log_path else subprocess.DEVNULL
        try:
            if log_path:
                out.write(f"+ {format_argv(argv)} &\n")
                out.flush()
            proc = subprocess.Popen(
                argv, cwd=cwd, env=child_env(env),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if log_path:
                out.close()
        return Background(proc, argv, log_path)

    def _spawn(self, argv, cwd, env, timeout, stdin, logf, stream, on_line) -> Result:
        start = time.monotonic()
        full_env = child_env(env)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
            bufsize=1,
        )
        timed_out = threading.Event()
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, lambda: (timed_out.set(), kill_group(proc)))
            timer.daemon = True
            timer.start()
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
        lines: list[str] = []
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                lines.append(line)
                logf.write(line + "\n")
                logf.flush()
                if stream:
                    self.echo(line)
                if on_line:
                    on_line(line)
            proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
        code = -signal.SIGALRM if timed_out.is_set() else proc.returncode
        return Result(tuple(argv), code, "\n".join(lines), time.monotonic() - start)

    @staticmethod
    def _failure(result: Result, timeout: float | None, log_path: Path | None) -> ToolError:
        tool = Path(result.argv[0]).name
        tail = collections.deque(result.output.splitlines(), maxlen=TAIL_LINES)
        if result.returncode == -signal.SIGALRM:
            what = f"{tool} timed out after {timeout:g} s and was stopped"
        elif result.returncode < 0:
            what = f"{tool} was killed by signal {-result.returncode}"
        else:
            what = f"{tool} failed with exit code {result.returncode}"
        body = "\n".join(f"    {line}" for line in tail)
        where = f"\n  full log: {log_path}" if log_path else ""
        msg = f"{what}: {format_argv(result.argv)}\n  last lines:\n{body}{where}"
        return ToolError(msg)


class Background:
    """A long-running child (a server, a VM) started by Runner.start; stop() kills its group."""

    def __init__(self, proc: subprocess.Popen, argv: list[str], log_path: Path | None):
        self.proc = proc
        self.argv = argv
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Stop the whole process group (SIGTERM, then SIGKILL); returns the exit code."""
        if self.running():
            kill_group(self.proc)
        return self.proc.wait()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _feed(proc: subprocess.Popen, data: str) -> None:
    try:
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass


class _NullFile:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass
