"""The stand-in as Packer and the pipeline will use it: tce-load from the loopback mirror,
SSH with a key through a host port forward, and the negative control that is the reason for
the whole project (runc's pivot_root fails when / is the initramfs).

Each guest runs a test /opt/bootlocal.sh restored from the test disk's mydata.tgz (restore
runs before bootsync.sh) and reports one line on the serial console; nothing waits on a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from appliance.vm.boot_check import free_port
from tests.standin import mirror as standin_mirror
from tests.standin import server
from tests.vm.disks import fields, make_disk, mydata
from tests.vm.guest_ssh import ssh, ssh_argv
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

PROMPT_TIMEOUT_S = 120
GUEST_TIMEOUT_S = 300
TC = (1001, 50)  # uid of tc, gid of staff


@pytest.fixture(scope="module")
def standin():
    """Everything the stand-in serves, built once (cached across runs)."""
    return standin_mirror.build_all()


@pytest.fixture(scope="module")
def served(standin):
    with server.running(standin.mirror) as url:
        yield url


def guest_url(host_url: str) -> str:
    """The same loopback server as a QEMU user-network guest sees it."""
    return host_url.replace("127.0.0.1", "10.0.2.2")


def boot(vm: VM, codes: str, marker: str) -> dict[str, str]:
    vm.wait_for_screen(r"^boot:", PROMPT_TIMEOUT_S)
    vm.send_keys(codes + "\n")
    return fields(vm.wait_for(rf"^{marker}: (.*)$", GUEST_TIMEOUT_S).group(1))


def bootlocal(body: str) -> tuple[str, int, int, int]:
    return ("#!/bin/sh\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            + body, 0o775, 0, 50)


# --- tce-load from the loopback mirror, SSH as tc with a key -------------------------------

SSH_BOOTLOCAL = """
# DHCP runs in the background (as on Tiny Core): wait for the lease before downloading
i=0
until route -n | grep -q '^0.0.0.0 ' || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
su tc -c "tce-load -wi openssh iptables" > /tmp/tceload.log 2>&1
rc=$?
[ $rc -eq 0 ] || tail -n 5 /tmp/tceload.log > /dev/console
/usr/local/etc/init.d/openssh start > /tmp/sshd.log 2>&1
echo "STANDIN-GUEST: tceload=$rc sshd=$?" > /dev/console
"""


def tampered_mirror(mirror: Path, work: Path, name: str) -> Path:
    """A copy of the mirror (hardlinks) whose NAME.tcz.md5.txt does not match NAME.tcz."""
    copy = work / "tampered"
    shutil.copytree(mirror, copy, copy_function=os.link)
    md5 = next(copy.glob(f"*/x86_64/tcz/{name}.tcz.md5.txt"))
    md5.unlink()  # a hardlink: never write through it into the cached mirror
    md5.write_text(f"{'0' * 32}  {name}.tcz\n")
    return copy


def test_tce_load_from_the_mirror_and_ssh_as_tc_with_a_key(standin, served, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")],
                   check=True)  # fmt: skip
    backup = mydata(
        {"opt/tcemirror": (guest_url(served) + "\n", 0o664, 0, 50),
         "opt/bootlocal.sh": bootlocal(SSH_BOOTLOCAL),
         "home/tc/.ssh/authorized_keys": ((tmp_path / "key.pub").read_text(), 0o600, *TC)},
        dirs={"home/tc/.ssh": (0o700, *TC)})
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "mydata.tgz").write_bytes(backup)
    disk = make_disk(tmp_path / "tree", tmp_path / "disk.img", tmp_path)
    port = free_port()
    kver = standin.kernel.release
    with VM(tmp_path, cdrom=standin.iso, disks=[disk], boot="d", hostfwd=[(port, 22)],
            name="ssh") as vm:
        result = boot(vm, "corepure64 restore=sda1 console=ttyS0", "STANDIN-GUEST")
        assert result == {"tceload": "0", "sshd": "0"}, vm.tail()
        probe = ssh(tmp_path / "key", port,
                    "id -un; echo --; readlink /usr/local/sbin/xtables-legacy-multi; echo --;"
                    " ls /tmp/tce/optional; echo --; cat /tmp/tce/onboot.lst; echo --;"
                    " sudo iptables -t nat -L POSTROUTING >/dev/null && echo nat-ok")
        assert probe.returncode == 0, probe.stderr
        user, link, optional, onboot, nat = [part.split() for part in
                                             probe.stdout.split("--\n")]
        assert user == ["tc"]
        assert link == ["/tmp/tcloop/iptables/usr/local/sbin/xtables-legacy-multi"]
        # the .dep chain was followed (iptables -> ipv6-netfilter-KERNEL) and md5 files kept
        assert {f"ipv6-netfilter-{kver}.tcz", f"ipv6-netfilter-{kver}.tcz.md5.txt", "openssh.tcz",
                "iptables.tcz", "iptables.tcz.dep"} <= set(optional)
        assert onboot == ["openssh.tcz", "iptables.tcz"]  # what was asked for, not its deps
        assert nat == ["nat-ok"]  # iptable_nat loaded from the netfilter extension
        methods = subprocess.run(
            ssh_argv(None, port, "true", "-v", "-o", "PreferredAuthentications=none"),
            capture_output=True, text=True, timeout=60)
        assert "Authentications that can continue: publickey\n" in methods.stderr  # no password
        with server.running(tampered_mirror(standin.mirror, tmp_path, "e2fsprogs")) as bad:
            refused = ssh(tmp_path / "key", port,
                          f"echo {guest_url(bad)} | sudo tee /opt/tcemirror; tce-load -wi e2fsprogs;"
                          " echo rc=$?; test -e /tmp/tcloop/e2fsprogs && echo mounted")
        assert "rc=0" not in refused.stdout and "mounted" not in refused.stdout, refused.stdout
        assert "rc=" in refused.stdout


# --- the negative control: pivot_root on the initramfs -------------------------------------

NEG_BOOTLOCAL = """
D=/mnt/sda1/neg
[ -e /lib64 ] || ln -s lib /lib64        # Debian's binaries ask for /lib64/ld-linux...
mkdir -p /sys/fs/cgroup /run /var/lib/containerd
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
for c in $(awk 'NR > 1 && $4 == 1 { print $1 }' /proc/cgroups); do
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
done
export PATH="$D/bin:$PATH"
containerd > /tmp/containerd.log 2>&1 &
i=0
until ctr version > /dev/null 2>&1 || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
ctr image import --snapshotter native "$D/image.oci.tar" > /tmp/import.log 2>&1
ctr run --rm --snapshotter native "$(cat $D/image-name)" neg /bin/busybox true \\
    > /tmp/run.log 2>&1
rc=$?
why=$(grep -o 'pivot_root[^:]*: invalid argument' /tmp/run.log | head -n 1 | tr ' ' '_')
root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)  # rootfs = the initramfs
echo "STANDIN-NEG: rc=$rc root=$root pivot=${why:-none}" > /dev/console
"""


@pytest.fixture(scope="module")
def neg_disk(standin, tmp_path_factory) -> Path:
    """containerd, its shim, ctr and runc from the stand-in's release assets + the image."""
    work = tmp_path_factory.mktemp("neg")
    bin_dir = work / "tree" / "neg" / "bin"
    bin_dir.mkdir(parents=True)
    github = standin.releases / "github"
    with tarfile.open(next(github.glob("containerd/containerd/**/containerd-*.tar.gz"))) as tar:
        for member in tar.getmembers():
            if member.isfile():
                member.name = Path(member.name).name
                tar.extract(member, bin_dir, filter="data")
    shutil.copy(next(github.glob("opencontainers/runc/**/runc.amd64")), bin_dir / "runc")
    (bin_dir / "runc").chmod(0o755)
    info = json.loads((standin.image / "info.json").read_text())
    shutil.copy(standin.image / "busybox.oci.tar", work / "tree" / "neg" / "image.oci.tar")
    (work / "tree" / "neg" / "image-name").write_text(info["image"])
    backup = mydata({"opt/bootlocal.sh": bootlocal(NEG_BOOTLOCAL)})
    (work / "tree" / "mydata.tgz").write_bytes(backup)
    return make_disk(work / "tree", work / "disk.img", work, size_mb=256)


@pytest.mark.parametrize("codes, root, passes", [
    ("corepure64 restore=sda1 console=ttyS0", "rootfs", False),
    ("corepure64 restore=sda1 noembed console=ttyS0", "tmpfs", True),
], ids=["initramfs-root-fails", "noembed-passes"])
def test_negative_control_pivot_root(standin, neg_disk, tmp_path, codes, root, passes):
    disk = tmp_path / "disk.img"
    shutil.copyfile(neg_disk, disk)
    with VM(tmp_path, cdrom=standin.iso, disks=[disk], boot="d", memory_mb=1024,
            name="neg") as vm:
        result = boot(vm, codes, "STANDIN-NEG")
    assert result["root"] == root, vm.tail()
    if passes:
        assert result == {"rc": "0", "root": root, "pivot": "none"}, vm.tail()
    else:
        assert result["rc"] != "0", vm.tail()
        assert result["pivot"] == "pivot_root_.:_invalid_argument", vm.tail()
