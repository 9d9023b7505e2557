"""The stand-in's served kernel source: Debian's linux-source-6.1 with tc11's old objtool.

tc11's linux-5.4.3-patched.txz carries the libsubcmd of Linux <= 5.16, whose xrealloc reuses
the pointer it just passed to realloc(); objtool (CONFIG_OBJTOOL / STACK_VALIDATION, which
`modules_prepare` builds) compiles it with -Werror, so GCC >= 12 stops with
"pointer may be used after 'realloc' [-Werror=use-after-free]" (Frogging-Family/linux-tkg#579,
kata-containers#10902 for 5.4.60). Upstream fixed it with "libsubcmd: Fix use-after-free for
realloc(..., 0)", which Debian's 6.1 tree has. The served tree gets the old shape back, so the
kernel stage's handling of an old tree is tested offline. The tarball is streamed member by
member (no 1.4 GB unpacked copy); the output depends only on the input's bytes.
"""

from __future__ import annotations

import io
import lzma
import re
import tarfile
from pathlib import Path

SUBCMD_UTIL = "tools/lib/subcmd/subcmd-util.h"
_XREALLOC = re.compile(r"static inline void \*xrealloc\(void \*ptr, size_t size\)\n\{.*?\n\}\n",
                       re.S)
# The pre-fix shape: on failure, realloc() the same pointer again (GCC 12 flags those calls).
OLD_XREALLOC = """\
/*
 * STAND-IN (tc-appliance, tests/standin/kernel_source.py): the xrealloc of Linux <= 5.16,
 * put back so that this tree fails with GCC >= 12 as tc11's 5.4.3 tree does.
 */
static inline void *xrealloc(void *ptr, size_t size)
{
	void *ret = realloc(ptr, size);
	if (!ret && !size)
		ret = realloc(ptr, 1);
	if (!ret) {
		ret = realloc(ptr, size);
		if (!ret && !size)
			ret = realloc(ptr, 1);
		if (!ret)
			die("Out of memory, realloc failed");
	}
	return ret;
}
"""


def with_old_xrealloc(text: str) -> str:
    """subcmd-util.h with xrealloc in its pre-fix shape; refuses a header it does not know."""
    new, count = _XREALLOC.subn(lambda _m: OLD_XREALLOC, text)
    if count != 1:
        raise ValueError(f"{SUBCMD_UTIL}: expected one xrealloc definition, found {count}")
    return new


def write_old_objtool_tree(source: Path, out: Path) -> None:
    """Copy the .tar.xz `source` to `out`, with subcmd-util.h in its pre-fix shape."""
    replaced = False
    # xz preset 0: fast (the served tarball is rebuilt only when its inputs change)
    with tarfile.open(source, "r|xz") as src, lzma.open(out, "wb", preset=0) as raw, \
            tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.isreg() and member.name.endswith(f"/{SUBCMD_UTIL}"):
                data = with_old_xrealloc(src.extractfile(member).read().decode()).encode()
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
                replaced = True
            else:
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    if not replaced:
        out.unlink()
        raise ValueError(f"{source}: no {SUBCMD_UTIL} in the tree")

