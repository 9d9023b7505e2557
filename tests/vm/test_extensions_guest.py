"""containerd.tcz and faasd.tcz on the stand-in: the init scripts' logic in a real guest.

The stand-in recipe is built up to the extensions stage (tests/extensions_stage.py); every
extension of its load order goes on a test disk as a tce directory (what the remaster and
packer stages will do), with a test /opt/bootlocal.sh restored from the disk's mydata.tgz
that loads openssh and reports a marker line. The guest boots with `noembed` (runc cannot
pivot_root on the initramfs); the test then drives it over SSH, step by step:

  containerd.tcz via tce-load (deps, lib64 fix) -> overlay hidden: containerd falls back to
  `native` loudly, faasd refuses naming the module -> overlay back: `ctr run` a container on
  a CNI bridge and reach it -> faasd.tcz with the faasd double: images imported into
  `openfaas`, provider and up with faasd's cwd and env, status healthy, secrets 0600 and
  never shown, restart on failure, the import retry bounded -> stop/start twice, cgroups
  mounted once.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.vm.boot_check import free_port
from tests import extensions_stage
from tests.vm.disks import make_disk, mydata
from tests.vm.guest_ssh import GUEST_PATH, ssh
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

PROMPT_TIMEOUT_S = 120
READY_TIMEOUT_S = 420
TC = (1001, 50)  # uid of tc, gid of staff
CONTAINERD = "sudo /usr/local/etc/init.d/containerd"
FAASD = "sudo /usr/local/etc/init.d/faasd"
IMAGE = "docker.io/standin/busybox:1.35.0"
ARCHIVE = "/usr/local/share/faasd/images/docker.io_standin_busybox_1.35.0.tar"

BOOTLOCAL = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
i=0
until route -n | grep -q '^0.0.0.0 ' || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
su tc -c "tce-load -i openssh" > /tmp/tce-openssh.log 2>&1
/usr/local/etc/init.d/openssh start > /tmp/sshd.log 2>&1
echo "EXT-GUEST-READY: sshd=$?" > /dev/console
"""

# A CNI network like faasd's (bridge with ipMasq, host-local IPAM, then firewall).
CONFLIST = ('{"cniVersion": "0.4.0", "name": "testnet", "plugins": ['
            '{"type": "bridge", "bridge": "cni-test0", "isGateway": true, "ipMasq": true,'
            ' "ipam": {"type": "host-local", "subnet": "10.77.0.0/24"}},'
            ' {"type": "firewall"}]}')


def tce_tree(build: extensions_stage.ExtensionsBuild, tree: Path) -> None:
    """tce/optional with every extension, its .md5.txt and .dep (ours as built: -KERNEL)."""
    optional = tree / "tce" / "optional"
    optional.mkdir(parents=True)
    listing = build.listing()
    for name in listing["order"]:
        entry = listing["extensions"][name]
        shutil.copyfile(build.path(name), optional / name)
        (optional / f"{name}.md5.txt").write_text(f"{entry['md5']}  {name}\n")
        if entry["source"] == "overlay":
            if (build.folder / f"{name}.dep").exists():
                shutil.copyfile(build.folder / f"{name}.dep", optional / f"{name}.dep")
        elif entry["deps"]:
            (optional / f"{name}.dep").write_text("".join(f"{d}\n" for d in entry["deps"]))


@pytest.fixture(scope="module")
def guest_disk(tmp_path_factory) -> tuple[Path, Path]:
    build = extensions_stage.built(tmp_path_factory.mktemp("build"))
    work = tmp_path_factory.mktemp("disk")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")],
                   check=True)
    tree = work / "tree"
    tce_tree(build, tree)
    (tree / "mydata.tgz").write_bytes(mydata(
        {"opt/bootlocal.sh": (BOOTLOCAL, 0o775, 0, 50),
         "home/tc/.ssh/authorized_keys": ((work / "key.pub").read_text(), 0o600, *TC)},
        dirs={"home/tc/.ssh": (0o700, *TC)}))
    return make_disk(tree, work / "disk.img", work, size_mb=640), work / "key"


class Guest:
    """SSH into the guest as tc; every command's output is kept (secrets must not be in it)."""

    def __init__(self, vm: VM, key: Path, port: int):
        self.vm, self.key, self.port = vm, key, port
        self.seen: list[str] = []

    def sh(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = ssh(self.key, self.port, GUEST_PATH + command, "-o", "LogLevel=ERROR",
                     timeout=timeout)
        self.seen += [result.stdout, result.stderr]
        return result

    def ok(self, command: str, timeout: float = 600) -> str:
        result = self.sh(command, timeout)
        assert result.returncode == 0, (f"{command}: exit {result.returncode}\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def fails(self, command: str) -> str:
        result = self.sh(command)
        assert result.returncode == 1, (f"{command}: exit {result.returncode}, wanted 1\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def guest(guest_disk, tmp_path_factory):
    disk, key = guest_disk
    work = tmp_path_factory.mktemp("vm")
    port = free_port()
    with VM(work, cdrom=extensions_stage.built(work).run.built.iso, disks=[disk], boot="d",
            memory_mb=1536, hostfwd=[(port, 22)], name="ext") as vm:
        vm.wait_for_screen(r"^boot:", PROMPT_TIMEOUT_S)
        vm.send_keys("corepure64 restore=sda1 noembed console=ttyS0\n")
        ready = vm.wait_for(r"^EXT-GUEST-READY: sshd=(\d+)", READY_TIMEOUT_S)
        assert ready.group(1) == "0", vm.tail()
        yield Guest(vm, key, port)


@pytest.fixture(scope="module")
def containerd_loaded(guest):
    out = guest.ok("tce-load -i containerd")
    return out


def test_containerd_loads_with_its_dependencies_and_the_lib64_fix(guest, containerd_loaded):
    loops = guest.ok("ls /tmp/tcloop").split()
    kver = guest.ok("uname -r").strip()
    assert {"containerd", "iptables", f"ipv6-netfilter-{kver}", f"net-bridging-{kver}",
            f"overlay-{kver}"} <= set(loops)
    assert guest.ok("readlink /lib64").strip() == "lib"  # made by tce.installed, not shipped
    assert guest.ok("readlink /usr/local/bin/ctr").strip() == \
        "/tmp/tcloop/containerd/usr/local/bin/ctr"
    assert "runc version" in guest.ok("runc --version")


def test_without_overlay_containerd_falls_back_and_faasd_refuses(guest, containerd_loaded):
    # state on the disk, as an installed appliance keeps it
    guest.ok("sudo mkdir -p /mnt/sda1/containerd /var/lib/containerd && "
             "sudo mount --bind /mnt/sda1/containerd /var/lib/containerd")
    ko = guest.ok("find /usr/local/lib/modules -name overlay.ko").strip()
    target = guest.ok(f"readlink {ko}").strip()
    guest.ok(f"sudo rm {ko} && sudo /sbin/depmod -a")
    out = guest.ok(f"{CONTAINERD} start")
    assert "kernel modules not available (not loaded, not built in): overlay" in out
    assert "overlay: ships in overlay-KERNEL.tcz" in out
    assert "falling back to the 'native' snapshotter" in out
    assert "CONTAINERD_SNAPSHOTTER=native" in guest.ok("cat /etc/profile.d/containerd.sh")
    assert "snapshotter native" in guest.ok(f"{CONTAINERD} status")
    guest.ok("tce-load -i faasd")
    refused = guest.fails(f"{FAASD} start")
    assert "kernel module 'overlay' is missing" in refused
    assert "overlay-KERNEL.tcz" in refused
    guest.ok(f"sudo ln -s {target} {ko} && sudo /sbin/depmod -a")
    out = guest.ok(f"{CONTAINERD} restart")
    assert "WARNING" not in out and "snapshotter overlayfs" in out
    assert guest.sh("test -e /etc/profile.d/containerd.sh").returncode == 1
    plugins = guest.ok("sudo ctr plugins ls")
    assert re.search(r"io\.containerd\.snapshotter\.v1\s+overlayfs\s+\S+\s+ok", plugins)


def test_ctr_runs_a_container_on_a_cni_bridge_and_it_is_reached(guest, containerd_loaded):
    guest.ok(f"sudo mkdir -p /etc/cni/net.d && echo {shlex.quote(CONFLIST)} | "
             "sudo tee /etc/cni/net.d/10-test.conflist >/dev/null")
    guest.ok(f"sudo ctr images import {ARCHIVE}")
    serve = "echo reached-from-the-host > /tmp/index.html; exec /bin/busybox httpd -f -p 8000 -h /tmp"
    guest.ok(f"sudo ctr run -d --cni {IMAGE} web /bin/sh -c {shlex.quote(serve)} "
             "</dev/null >/tmp/ctr-run.log 2>&1 || { cat /tmp/ctr-run.log; exit 1; }")
    address = guest.ok("sudo ls /var/lib/cni/networks/testnet | grep '^10\\.77\\.'").strip()
    page = guest.ok(f"i=0; until wget -q -O - http://{address}:8000/; do "
                    "i=$((i + 1)); [ $i -lt 30 ] || exit 1; sleep 1; done")
    assert page.strip() == "reached-from-the-host"
    assert "cni-test0" in guest.ok("ifconfig cni-test0")  # tc11's busybox has no `ip`
    assert "CNI-" in guest.ok("sudo iptables -t nat -S POSTROUTING")  # ipMasq
    guest.ok("sudo ctr task rm -f web && sudo ctr container rm web")


@pytest.fixture(scope="module")
def faasd_started(guest, containerd_loaded):
    guest.ok("tce-load -i faasd")
    return guest.ok(f"{FAASD} start", timeout=900)


def test_faasd_imports_its_images_and_starts_provider_and_up(guest, faasd_started):
    assert f"image {IMAGE}: imported into namespace openfaas" in faasd_started
    assert "generated the gateway's basic-auth password" in faasd_started
    assert IMAGE in guest.ok("sudo ctr -n openfaas images ls -q").split()
    for name, cwd in (("provider", "/var/lib/faasd-provider"), ("up", "/var/lib/faasd")):
        pid = guest.ok(f"sudo cat /var/run/faasd/{name}.child").strip()
        assert guest.ok(f"sudo readlink /proc/{pid}/cwd").strip() == cwd
        env = guest.ok(f"sudo cat /proc/{pid}/environ | tr '\\0' '\\n'").split()
        assert "SSH_CONNECTION" not in " ".join(env)  # a clean environment, as systemd's
        if name == "provider":
            assert {"secret_mount_path=/var/lib/faasd/secrets", "basic_auth=true",
                    "hosts_dir=/var/lib/faasd"} <= set(env)
    assert "healthy" in guest.ok(f"{FAASD} status")
    assert guest.ok("wget -q -O - http://127.0.0.1:8080/healthz").strip() == "OK"
    for log in ("faasd.log", "faasd-provider.log", "containerd.log"):
        guest.ok(f"test -s /var/log/{log}")


def test_secrets_are_0600_and_never_shown(guest, faasd_started):
    # ls -n, not stat: tc11's busybox has no stat
    modes = guest.ok("sudo ls -lnd /var/lib/faasd/secrets "
                     "/var/lib/faasd/secrets/basic-auth-user "
                     "/var/lib/faasd/secrets/basic-auth-password").splitlines()
    assert [m.split()[0:3:2] for m in modes] == [
        ["drwx------", "0"], ["-rw-------", "0"], ["-rw-------", "0"]]
    password = guest.ok("sudo cat /var/lib/faasd/secrets/basic-auth-password")
    guest.seen.pop()  # the test's own read is the only place it may appear
    guest.seen.pop()
    assert re.fullmatch(r"[A-Za-z0-9]{63}", password), "63 characters from /dev/urandom"
    assert guest.ok("sudo cat /var/lib/faasd/secrets/basic-auth-user") == "admin"
    logs = guest.ok("sudo cat /var/log/*.log")
    assert password not in logs
    assert not any(password in text for text in guest.seen)
    assert password not in guest.vm.serial_text()


def test_a_failed_provider_is_restarted_with_backoff(guest, faasd_started):
    old = guest.ok("sudo cat /var/run/faasd/provider.child").strip()
    guest.ok(f"sudo kill -9 {old}")
    guest.ok(f"i=0; until [ \"$(sudo cat /var/run/faasd/provider.child)\" != {old} ] && "
             "wget -q -O /dev/null http://127.0.0.1:8081/healthz; do "
             "i=$((i + 1)); [ $i -lt 60 ] || exit 1; sleep 1; done")
    log = guest.ok("sudo cat /var/log/faasd-provider.log")
    assert "provider exited with status 137; restarting in 2 s" in log
    assert "healthy" in guest.ok(f"{FAASD} status")


def test_a_failing_image_import_is_retried_a_bounded_number_of_times(guest, faasd_started):
    target = guest.ok(f"readlink {ARCHIVE}").strip()
    guest.ok(f"{FAASD} stop && sudo ctr -n openfaas images rm {IMAGE} && "
             f"sudo rm {ARCHIVE} && echo damaged | sudo tee {ARCHIVE} >/dev/null")
    out = guest.fails("sudo env FAASD_IMPORT_TRIES=2 /usr/local/etc/init.d/faasd start")
    assert f"image {IMAGE}: import failed (try 1 of 2); retrying in 2 s" in out
    assert "failed 2 times" in out and "/var/log/faasd-images.log" in out
    assert "not healthy" in guest.fails(f"{FAASD} status")
    guest.ok(f"sudo rm {ARCHIVE} && sudo ln -s {target} {ARCHIVE}")


def test_stop_and_start_twice_without_error(guest, faasd_started):
    cycle = (f"{FAASD} stop && {CONTAINERD} stop && {CONTAINERD} start && "
             f"{FAASD} start && {FAASD} status && {CONTAINERD} status")
    first = guest.ok(cycle, timeout=900)
    second = guest.ok(cycle, timeout=900)
    assert f"image {IMAGE}: imported" in first  # removed by the retry test
    assert f"image {IMAGE}: present" in second
    mounts = guest.ok("awk '$2 ~ \"^/sys/fs/cgroup\" { print $2 }' /proc/mounts").split()
    assert mounts.count("/sys/fs/cgroup") == 1 and len(mounts) == len(set(mounts)) > 3
    assert "stopped" in guest.ok(f"{FAASD} stop")
    assert "stopped" in guest.ok(f"{CONTAINERD} stop")
    assert "not running" in guest.fails(f"{CONTAINERD} status")
    assert "not healthy" in guest.fails(f"{FAASD} status")
