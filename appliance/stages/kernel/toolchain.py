"""Which C compiler the kernel stage builds a tree with: the host's gcc, or gcc-11.

Linux <= 5.16's tools/lib/subcmd/subcmd-util.h (tc11's 5.4.3 among them) has an xrealloc that
passes the same pointer to realloc() again after a failed realloc(ptr, 0). objtool links
libsubcmd and builds with -Werror; tc11's config has STACK_VALIDATION, so `modules_prepare`
builds it, and GCC >= 12 stops with "pointer may be used after 'realloc'
[-Werror=use-after-free]" (Frogging-Family/linux-tkg#579, kata-containers#10902).
Upstream fixed the header ("libsubcmd: Fix use-after-free for realloc(..., 0)"). The stage
does not patch the pinned tree (its bytes are what the lock vouches for; tc11's kernel was
built from it with GCC 9.2): it builds such a tree with gcc-11, which Debian 12 and Ubuntu
24.04 package, passed as CC= and HOSTCC= to every make.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from appliance.errors import StageError

SUBCMD_UTIL = "tools/lib/subcmd/subcmd-util.h"
OLD_GCC = "gcc-11"
FIRST_STRICT_GCC = 12  # the first GCC whose -Wall has -Wuse-after-free=2
_XREALLOC = re.compile(r"\*xrealloc\s*\([^)]*\)\s*\{(?P<body>.*?)\n\}", re.S)


def old_libsubcmd(header: str) -> bool:
    """Whether subcmd-util.h's xrealloc calls realloc() on the pointer a second time."""
    match = _XREALLOC.search(header)
    return bool(match) and len(re.findall(r"\brealloc\s*\(\s*ptr\b", match["body"])) > 1


def gcc_major(version: str) -> int | None:
    """`gcc -dumpversion` (12, 12.2.0) -> 12; None when it is not a version."""
    match = re.match(r"\s*(\d+)", version)
    return int(match[1]) if match else None


@dataclass(frozen=True)
class Toolchain:
    cc: str | None  # None: the host's gcc, as make picks it
    reason: str

    @property
    def make_vars(self) -> tuple[str, ...]:
        return (f"CC={self.cc}", f"HOSTCC={self.cc}") if self.cc else ()


def choose(tree_has_old_libsubcmd: bool, host_gcc: int | None) -> Toolchain:
    """The compiler for a tree (pure): gcc-11 when the host's gcc rejects its objtool."""
    if tree_has_old_libsubcmd and (host_gcc is None or host_gcc >= FIRST_STRICT_GCC):
        host = f"gcc {host_gcc}" if host_gcc else "the host's gcc"
        return Toolchain(OLD_GCC, f"{OLD_GCC}: the tree's objtool (pre-fix libsubcmd "
                                  f"xrealloc) does not build with {host} (GCC >= 12: "
                                  "-Werror=use-after-free)")
    if tree_has_old_libsubcmd:
        return Toolchain(None, f"the host's gcc {host_gcc} (older than 12 builds the tree's "
                               "old objtool)")
    return Toolchain(None, f"the host's gcc {host_gcc or ''}".rstrip()
                     + " (the tree's libsubcmd has the use-after-free fix)")


def require(toolchain: Toolchain, which: Callable[[str], str | None] = shutil.which) -> None:
    """A chosen compiler must be installed; say how to get it."""
    if toolchain.cc and which(toolchain.cc) is None:
        raise StageError(f"kernel: this kernel tree needs {toolchain.cc}, which is not "
                         f"installed ({toolchain.reason})",
                         f"install it: `apt-get install {toolchain.cc}` (Debian 12, Ubuntu "
                         "24.04), or run `make deps`")
