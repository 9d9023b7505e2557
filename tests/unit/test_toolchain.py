"""The kernel stage's compiler choice for trees whose objtool GCC >= 12 rejects."""

from __future__ import annotations

import pytest

from appliance.errors import StageError
from appliance.stages.kernel import toolchain

# tools/lib/subcmd/subcmd-util.h's xrealloc before and after upstream's "libsubcmd: Fix
# use-after-free for realloc(..., 0)" (the shapes, written for this test).
OLD = """static inline void *xrealloc(void *ptr, size_t size)
{
\tvoid *ret = realloc(ptr, size);
\tif (!ret && !size)
\t\tret = realloc(ptr, 1);
\tif (!ret) {
\t\tret = realloc(ptr, size);
\t\tif (!ret && !size)
\t\t\tret = realloc(ptr, 1);
\t\tif (!ret)
\t\t\tdie("Out of memory, realloc failed");
\t}
\treturn ret;
}
"""
FIXED = """static inline void *xrealloc(void *ptr, size_t size)
{
\tvoid *ret = realloc(ptr, size);
\tif (!ret)
\t\tdie("Out of memory, realloc failed");
\treturn ret;
}
"""


def test_the_old_libsubcmd_is_told_from_the_fixed_one():
    assert toolchain.old_libsubcmd("#define X 1\n" + OLD + "#define Y 2\n")
    assert not toolchain.old_libsubcmd(FIXED)
    assert not toolchain.old_libsubcmd("no xrealloc here")


def test_an_old_tree_on_gcc_12_or_later_is_built_with_gcc_11():
    for host in (12, 13, 14, None):
        chosen = toolchain.choose(True, host)
        assert chosen.cc == "gcc-11"
        assert chosen.make_vars == ("CC=gcc-11", "HOSTCC=gcc-11")
        assert "use-after-free" in chosen.reason


def test_the_host_gcc_is_kept_where_it_builds_the_tree():
    assert toolchain.choose(True, 11).make_vars == ()
    assert toolchain.choose(False, 13).make_vars == ()
    assert "has the use-after-free fix" in toolchain.choose(False, 13).reason


def test_gcc_major():
    assert [toolchain.gcc_major(v) for v in ("12\n", "12.2.0", "x")] == [12, 12, None]


def test_a_needed_compiler_that_is_missing_fails_clearly():
    chosen = toolchain.choose(True, 12)
    with pytest.raises(StageError, match="needs gcc-11, which is not installed") as err:
        toolchain.require(chosen, which=lambda name: None)
    assert "apt-get install gcc-11" in err.value.hint
    toolchain.require(chosen, which=lambda name: f"/usr/bin/{name}")
    toolchain.require(toolchain.choose(False, 12), which=lambda name: None)  # host gcc


def test_the_standin_tree_s_old_header_is_what_the_stage_detects():
    from tests.standin import kernel_source

    old = kernel_source.with_old_xrealloc("#ifndef X\n" + FIXED + "#endif\n")
    assert toolchain.old_libsubcmd(old) and "STAND-IN" in old
    with pytest.raises(ValueError, match="expected one xrealloc"):
        kernel_source.with_old_xrealloc("nothing")
