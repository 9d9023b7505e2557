"""The stand-in's shell offers exactly Tiny Core 11's busybox applets.

The real corepure64.gz of the stand-in (cached kernel) is unpacked and its /bin/sh run in a
chroot (in a user namespace, so no root is needed): a command tc11's busybox lacks must be
`not found` although Debian's busybox has it compiled in, and one tc11 has must run.
"""

from __future__ import annotations

import gzip
import stat
import subprocess
from pathlib import Path

import pytest

from tests.standin import cpio, rootfs
from tests.standin.kernel import build_kernel

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corepure64")
    archive = rootfs.build_rootfs(build_kernel())
    for entry in cpio.read_newc(gzip.decompress(archive.read_bytes())):
        path = root / entry.path
        if stat.S_ISDIR(entry.mode):
            path.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISLNK(entry.mode):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(entry.data.decode())
        elif stat.S_ISREG(entry.mode):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(entry.data)
            path.chmod(stat.S_IMODE(entry.mode) & 0o777)
    return root


def guest_sh(tree: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "-r", "chroot", str(tree), "/bin/sh", "-c",
         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; " + script],
        capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("applet", ["sha256sum", "stat", "acpid", "ip", "mountpoint", "base64",
                                    "mdev", "findfs", "unshare", "nsenter", "blkdiscard"])
def test_an_applet_tiny_core_lacks_is_not_found(tree, applet):
    result = guest_sh(tree, f"{applet} --help")
    assert result.returncode == 127, result
    assert f"{applet}: not found" in result.stderr


def test_applets_tiny_core_has_run_and_blkid_is_util_linux(tree):
    result = guest_sh(tree, "echo hi | md5sum; echo hi | sha1sum; timeout 5 true && echo ok; "
                            "su --help 2>&1 | head -1; blkid --version")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("764efa883dda1e11db47671c4a3bbd9e  -")
    assert lines[2] == "ok"
    assert "BusyBox" in lines[3]
    assert "util-linux" in lines[4]


def test_the_stand_ins_own_scripts_reach_private_applets(tree):
    # `busybox APPLET` and the hotplug link stay available to the stand-in's boot.
    result = guest_sh(tree, "busybox mdev --help 2>&1 | head -1; "
                            "/usr/lib/standin/mdev --help 2>&1 | head -1")
    assert result.stdout.count("BusyBox") == 2, result


# --- tc-functions: boot codes as tc-config and tc-restore.sh read them ----------------------

FUNCTIONS = rootfs.TREE / "etc" / "init.d" / "tc-functions"


def boot_codes(tmp_path: Path, cmdline: str, calls: str) -> list[str]:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = f". {FUNCTIONS}\n{calls}"
    done = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CMDLINE_FILE": str(tmp_path / "cmdline")},
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_prefix_codes_are_read_as_tc_config_reads_them(tmp_path):
    # tc-config @ 0ed6e60: `host*) HOST=1`, `opt*) MYOPT=${i#*=}`, `user*) USER=...`
    out = boot_codes(tmp_path, "quiet hostname=x options=sda9 username=bob restore_at=sr0",
                     'echo "[$(prefixcode opt)] [$(prefixcode user)] [$(prefixcode restore)]"\n'
                     'prefixflag host && echo host-set\n'
                     'echo "[$(bootcode host)] [$(bootcode opt)]"\n')
    assert out == ["[sda9] [bob] [sr0]", "host-set", "[] []"]


def test_noscan_list_is_upstreams():
    listed = (rootfs.TREE / "etc" / "init.d" / "tc_noscan.lst").read_text().split()
    assert listed == ["cdrom", "swap", "pts", "fd", "ntfs", "sr0", "sr1", "sr2", "sr3"]
