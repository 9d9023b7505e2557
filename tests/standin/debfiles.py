"""What the stand-in takes from the host's Debian packages: files, versions, ELF facts.

Shared by extensions.py (Tiny-Core-named extensions) and releases.py (repacked release
downloads). Nothing here downloads: every byte comes from a package already installed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import struct
from pathlib import Path

from appliance.config import DEFAULT_SOURCE_DATE_EPOCH
from appliance.errors import ToolError
from appliance.run import Runner

PT_INTERP = 3


def source_date_epoch() -> int:
    """Every timestamp the stand-in writes: SOURCE_DATE_EPOCH, else the recipe default."""
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(env) if env.isdigit() else DEFAULT_SOURCE_DATE_EPOCH


def package_files(runner: Runner, package: str) -> list[str]:
    """`dpkg -L package`: every path the package installed (directories included)."""
    result = runner.run(["dpkg", "-L", package], check=False, log="debian")
    if result.returncode != 0:
        raise ToolError(f"Debian package {package} is not installed",
                        f"install it with `apt-get install {package}` (or run `make deps`)")
    return [line for line in result.output.splitlines() if line.startswith("/")]


def find_files(runner: Runner, package: str, pattern: str) -> list[Path]:
    """The package's regular files (or links to them) whose path matches `pattern`."""
    found = sorted(Path(p) for p in package_files(runner, package)
                   if fnmatch.fnmatchcase(p, pattern) and Path(p).is_file())
    if not found:
        raise ToolError(f"{package} installs no file matching {pattern}",
                        "the Debian package changed; update the stand-in's file list")
    return found


def versions(runner: Runner, packages: list[str], *, transitive: bool = True) -> dict[str, str]:
    """Installed version of each package and (transitive) of everything it depends on.

    Cache-key material: a security update of a library that an extension carries (say
    libtomcrypt for dropbear) must rebuild the extension."""
    seen: dict[str, str] = {}  # "" = virtual or not installed
    todo = sorted(set(packages))
    fmt = "${Package}\t${Version}\t${Depends}, ${Pre-Depends}\n"
    while todo:
        result = runner.run(["dpkg-query", "-W", f"-f={fmt}", *todo], check=False, log="debian")
        found = dict(_fields(line) for line in result.output.splitlines() if line.count("\t") == 2)
        missing = sorted(p for p in packages if p in todo and not found.get(p, ("",))[0])
        if missing:
            raise ToolError(f"Debian package(s) not installed: {', '.join(missing)}",
                            "run `make deps`")
        for name in todo:
            seen[name] = found.get(name, ("", ""))[0]
        deps = {_package_name(alt) for version, depends in found.values() if version
                for alt in re.split(r"[,|]", depends) if alt.strip()}
        todo = sorted(d for d in deps if d not in seen) if transitive else []
    return {name: version for name, version in sorted(seen.items()) if version}


def _fields(line: str) -> tuple[str, tuple[str, str]]:
    name, version, depends = line.split("\t")
    return name, (version, depends)


def _package_name(relation: str) -> str:
    """'libc6 (>= 2.34)' or 'python3:any' -> the package name."""
    return re.split(r"[\s(:]", relation.strip())[0]


def upstream_version(debian_version: str) -> str:
    """Debian's version without epoch, revision and repack suffix: 1.6.20~ds1-1+deb12u3 -> 1.6.20."""
    version = debian_version.split(":", 1)[-1]
    version = version.rsplit("-", 1)[0] if "-" in version else version
    return re.split(r"[~+](?:ds|dfsg)", version)[0]


def elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP of an ELF64 file, None for other files and for files without one."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64 only
            return None
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", fh.read(40))
            if p_type == PT_INTERP:
                fh.seek(p_offset)
                return fh.read(p_filesz).rstrip(b"\0").decode()
    return None


def is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def shared_libraries(runner: Runner, path: Path) -> dict[str, Path]:
    """soname -> resolved host path of every library `path` loads (ldd: transitive)."""
    result = runner.run(["ldd", str(path)], check=False, log="debian")
    if "not a dynamic executable" in result.output or "statically linked" in result.output:
        return {}
    libs = {}
    for line in result.output.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(0x", line)
        if m:
            libs[m.group(1)] = Path(m.group(2))
        elif "=> not found" in line:
            raise ToolError(f"ldd {path}: {line.strip()}", "install the missing library")
    if result.returncode != 0 and not libs:
        raise ToolError(f"ldd {path} failed: {result.output.strip()[:200]}")
    return libs
