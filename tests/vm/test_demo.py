"""`make demo`, end to end on the stand-in, in both install modes (issue: the packer stage).

Each mode runs the real `make demo` into a build folder of its own, from empty to a verified
qcow2: the stand-in is built (cached) and served for the duration of the build, Packer boots
the remastered ISO under QEMU, install-to-disk.sh installs, the VM reboots into the disk and
verify.sh prints APPLIANCE-VERIFY: PASS. The same build folder then serves:
- the negative control (docs/decisions.md#install-to-disk): the live ISO, containerd loaded from the CD by
  hand, runc's pivot_root fails with "invalid argument" because / is the initramfs;
- Ctrl-C or SIGTERM during `packer build`: Packer and QEMU stop, no stray qemu, the last good
  build stays.
Pass/fail comes from Packer's output, the serial console and SSH, never from a sleep.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import keys
from appliance.paths import MARKER, REPO, cache_root
from appliance.vm import timeline
from appliance.vm.boot_check import free_port
from tests.vm import guest_ssh
from tests.vm.demo_build import DEMO_TIMEOUT_S, Demo
from tests.vm.guest_ssh import GUEST_PATH
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(5400)]

LIVE_TIMEOUT_S = 600
IMAGE = "docker.io/standin/busybox:1.35.0"
PHASES = ["boot", "ssh", "install", "reboot", "verify", "cleanup", "shutdown", "convert"]


def qemu_img_info(path: Path) -> dict:
    text = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                          capture_output=True, text=True).stdout
    return json.loads(text)


def check_verified(demo: Demo, root_line: str) -> None:
    output = demo.output()
    assert "packer: APPLIANCE-VERIFY: PASS" in output
    assert root_line in output
    assert "verify: a container of " in output and "ran on the CNI bridge" in output
    assert re.search(r"verify: faasd gateway \S+: 200", output)
    report = json.loads((demo.build / "packer" / "build.json").read_text())
    assert report["install_mode"] == demo.mode
    assert list(report["phases"]) == PHASES
    info = qemu_img_info(demo.qcow2())
    assert info["format"] == "qcow2" and info["virtual-size"] == 2048 * 1024 * 1024
    assert not (demo.build / "packer" / "output").exists()
    serial = (demo.build / "logs" / "packer-serial.log").read_text(errors="replace")
    # cleanup.sh stops the services through /opt/appliance-stop.sh, last-first
    assert re.search(r"APPLIANCE-STOP faasd ok\s+APPLIANCE-STOP containerd ok", serial)


def test_make_demo_traditional_gives_a_verified_qcow2(traditional):
    check_verified(traditional, "verify: / is ext4 (traditional install)")
    output = traditional.output()
    # the root by identity, so the disk boots on every bus (test-image --disk-bus below)
    uuid = re.search(r"install-to-disk: root filesystem UUID=([0-9a-f-]{36})", output)[1]
    assert f"install-to-disk: boot line: root=UUID={uuid} noautologin console=tty0 " \
           "console=ttyS0,115200" in output
    build = json.loads((traditional.build / "packer" / "build.json").read_text())
    assert build["root_fs"] == f"UUID={uuid}"
    manifest = json.loads((traditional.out / "manifest.json").read_text())
    assert manifest["root_fs"] == f"UUID={uuid}"
    assert "demo: stand-in servers stopped" in output


def test_make_demo_frugal_gives_a_verified_qcow2(frugal):
    check_verified(frugal, "verify: / is tmpfs (frugal install)")
    output = frugal.output()
    uuid = re.search(r"install-to-disk: root filesystem UUID=([0-9a-f-]{36})", output)[1]
    assert f"install-to-disk: boot line: noembed waitusb=10:UUID={uuid} tce=UUID={uuid} " \
           "noautologin console=tty0 console=ttyS0,115200" in output
    assert "extensions loaded from /mnt/sda1/tce/optional" in output
    for tool in ("e2fsprogs.tcz", "syslinux.tcz"):  # copied, not loaded at boot
        assert f"install-to-disk: {tool}: the installer's tool (live.install_only), " \
               "not in onboot.lst" in output
        assert f"install-to-disk: copying {tool} to tce/optional" in output
    assert "verify: /var/lib/containerd is on the disk (/dev/sda1)" in output  # bootsync's bind


# --- the negative control: containers on the live system ----------------------------------


def ssh(port: int, command: str) -> subprocess.CompletedProcess:
    return guest_ssh.ssh(keys.key_path(cache_root() / "keys"), port, GUEST_PATH + command,
                         timeout=600)


def test_negative_control_runc_cannot_pivot_root_on_the_live_iso(traditional, tmp_path):
    iso = next((traditional.build / "remaster").glob("*.iso"))
    port = free_port()
    with VM(tmp_path, cdrom=iso, boot="d", hostfwd=[(port, 22)], memory_mb=1024,
            name="negative") as vm:
        # the services' marker, not the FIRSTBOOT or PHASE lines printed before it
        marker = vm.wait_for(r"^(APPLIANCE-(?:LIVE|READY|NOT-READY)\b.*?)\r?$", LIVE_TIMEOUT_S)
        assert marker.group(1) == "APPLIANCE-LIVE"
        cd = "/mnt/sr0/cde/optional"
        steps = [
            "awk '$2 == \"/\" { t = $3 } END { print \"root=\" t }' /proc/mounts",
            f"tce-load -i {cd}/containerd.tcz {cd}/faasd-images.tcz >/dev/null",
            "sudo /usr/local/etc/init.d/containerd start >/dev/null",
            "archive=$(awk '{ print $1; exit }' /usr/local/share/faasd/images/images.lst)",
            "sudo ctr images import /usr/local/share/faasd/images/$archive >/dev/null",
            f"sudo ctr run --rm {IMAGE} negative /bin/true > /tmp/run.log 2>&1; echo rc=$?",
            "cat /tmp/run.log",
        ]
        result = ssh(port, " && ".join(steps[:-2]) + "; " + "; ".join(steps[-2:]))
        assert result.returncode == 0, result.stderr + vm.tail()
        # noautologin (the default): tty1 shows a login prompt, not a shell of tc; long
        # after the boot, so root's first automatic login has emptied the marker and exited.
        ps = ssh(port, "ps").stdout
    assert re.search(r"getty 38400 tty1$", ps, re.M), ps
    assert not re.search(r"^\s*\d+\s+tc\s.*\s-sh$", ps, re.M), ps
    lines = result.stdout.splitlines()
    assert lines[0] == "root=rootfs"  # the live system runs from the initramfs
    assert "rc=0" not in lines and any(line.startswith("rc=") for line in lines)
    assert re.search(r"pivot_root[^:]*: invalid argument", result.stdout), result.stdout


# --- Ctrl-C during packer build --------------------------------------------------------------


def qemu_processes(serial_log: Path) -> list[str]:
    """QEMU processes whose command line names this serial log (read from /proc: ps may cut
    a long command line short)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        text = " ".join(a.decode(errors="replace") for a in args)
        if args and b"qemu-system" in args[0] and str(serial_log) in text:
            found.append(f"{cmdline.parent.name} {text}")
    return found


def socket_inodes(pid: str) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def proc_net_address(hex_addr: str) -> str:
    """/proc/net/tcp{,6}'s local address (little-endian 32-bit words in hex) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def listening(pid: str) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket of the process in state LISTEN (0A)."""
    inodes, found = socket_inodes(pid), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                addr, port = fields[1].split(":")
                found.append((proc_net_address(addr), int(port, 16)))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_packer_and_qemu_and_keeps_the_last_build(traditional, sig):
    """Ctrl-C from a terminal, SIGTERM from CI timeouts and `timeout make image`: the same
    cleanup, exit 128+signal."""
    qcow2 = traditional.qcow2()
    before = qcow2.stat().st_size, qcow2.stat().st_mtime
    overlay = traditional.build / "standin" / "standin.toml"
    argv = [sys.executable, str(REPO / "pipeline.py"), "build", "-c",
            str(REPO / "tests" / "standin" / "recipe.toml"), "-c", str(overlay),
            "--lock", str(traditional.build / "standin" / "standin.lock"), "--locked",
            "--force", "packer", "--until", "packer", "--offline"]
    proc = subprocess.Popen(argv, cwd=REPO, env=traditional.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:  # type: ignore[union-attr]
        seen.append(line)
        if "phase ssh" in line or time.monotonic() > deadline:
            break
    serial = traditional.build / "logs" / "packer-serial.log"
    assert qemu_processes(serial), "".join(seen)  # QEMU is up
    # Packer's SSH forward (and VNC) listen on loopback only, never on every interface
    sockets = [addr for entry in qemu_processes(serial) for addr in listening(entry.split()[0])]
    assert sockets, "QEMU listens on nothing: the SSH forward is missing"
    assert all(loopback(a) for a, _ in sockets), sockets
    os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the foreground process group
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, "".join(seen) + rest
    deadline = time.monotonic() + 30
    while qemu_processes(serial) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not qemu_processes(serial), "".join(seen) + rest
    assert "Traceback" not in rest and "==> finished" not in rest and "packer: done" not in rest
    assert (qcow2.stat().st_size, qcow2.stat().st_mtime) == before  # the last good build


# --- the deliverables (export stage) and test-image ------------------------------------------


def run_test_image(demo: Demo, *args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), "test-image",
                           *map(str, args)], cwd=REPO, env=demo.env, capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S)


SEED_ID = "iid-deliverables"


def test_make_demo_fills_out_with_the_deliverables(traditional):
    stem = traditional.qcow2().stem
    names = sorted(p.name for p in traditional.out.iterdir())
    assert names == sorted([f"{stem}.qcow2", f"{stem}.ova", "SHA256SUMS", "manifest.json",
                            MARKER])  # the marker: `clean` may delete out/
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=traditional.out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((traditional.out / "manifest.json").read_text())
    assert manifest["accelerator"] in ("kvm", "tcg")


@pytest.fixture(scope="module")
def tested_images(traditional, tmp_path_factory) -> subprocess.CompletedProcess:
    """One `test-image` of the demo's deliverables (two boots each), shared by the tests
    that read its verdicts and the serial logs it keeps. With a NoCloud seed attached, as a
    user attaches one: boot 1 applies it, boot 2 (the same instance-id) does not again."""
    seed = tmp_path_factory.mktemp("seed")
    (seed / "meta-data").write_text(f"instance-id: {SEED_ID}\nlocal-hostname: deliverable\n")
    (seed / "user-data").write_text("#cloud-config\n")
    # default: every qcow2 and OVA in out/
    return run_test_image(traditional, "--seed", str(seed))


def test_image_boots_the_qcow2_and_the_ovas_disk_twice_each(traditional, tested_images):
    result = tested_images
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    verdicts = [line for line in result.stdout.splitlines()
                if line.startswith(("test-image: PASS", "test-image: FAIL"))]
    assert len(verdicts) == 2 and all(v.startswith("test-image: PASS") for v in verdicts)
    assert any(".qcow2 " in v for v in verdicts) and any(".ova " in v for v in verdicts)
    assert all(re.search(r"boot 1: \d+\.\d s, boot 2: \d+\.\d s", v) for v in verdicts)
    # acpid.tcz (the stand-in's busybox has no acpid, as tc11's) turns the ACPI power button
    # into /opt/appliance-stop.sh poweroff: services stopped last-first, then the power-off
    assert result.stderr.count("powered off") == 4, result.stderr[-4000:]
    kept = traditional.build / "logs" / "test-image"
    for image in (traditional.qcow2(), traditional.out / f"{traditional.qcow2().stem}.ova"):
        for boot in (1, 2):
            serial = (kept / f"{image.name}.boot{boot}-serial.log").read_text(errors="replace")
            stops = re.findall(r"^APPLIANCE-STOP (\S+) (\S+)\s*$", serial, re.MULTILINE)
            assert stops == [("faasd", "ok"), ("containerd", "ok")], serial[-3000:]
            assert serial.index("APPLIANCE-READY") < serial.index("APPLIANCE-STOP faasd ok")
            firstboot = re.findall(r"^APPLIANCE-FIRSTBOOT: (.*?)\s*$", serial, re.MULTILINE)
            assert firstboot == ([f"applied nocloud {SEED_ID} hostname"] if boot == 1 else
                                 [f"unchanged nocloud {SEED_ID}"]), serial[-3000:]


def test_every_boot_prints_its_timeline_in_order_and_boot_2_imports_no_image(traditional,
                                                                             tested_images):
    assert tested_images.returncode == 0, tested_images.stdout + tested_images.stderr[-4000:]
    printed = re.findall(r"^test-image: boot (\d) timeline: kernel ", tested_images.stdout, re.M)
    assert printed == ["1", "2", "1", "2"], tested_images.stdout  # per image, after its verdict
    expected = list(timeline.PHASES)
    kept = traditional.build / "logs" / "test-image"
    for image in (traditional.qcow2(), traditional.out / f"{traditional.qcow2().stem}.ova"):
        boots = []
        for boot in (1, 2):
            serial = (kept / f"{image.name}.boot{boot}-serial.log").read_text(errors="replace")
            [phases] = timeline.parse(serial)  # one boot per log
            assert timeline.problems(phases) == [], (image.name, boot, phases)
            assert [p.name for p in phases] == expected, serial[-3000:]
            assert serial.index("APPLIANCE-PHASE ready") < serial.index("APPLIANCE-READY")
            boots.append(timeline.find(phases, "images"))
        first, second = boots
        counts = [timeline.detail_field(first, k) for k in ("imported", "present")]
        assert all(c is not None and c.isdigit() for c in counts), first
        listed = sum(map(int, counts))  # every images.lst entry, imported or already there
        assert listed >= 1, first
        # the second boot finds every image in containerd's state on the disk
        assert timeline.detail_field(second, "imported") == "0", second
        assert timeline.detail_field(second, "present") == str(listed), second


def test_image_boots_the_frugal_install_twice_on_a_disk_left_clean(frugal):
    stem = frugal.qcow2().stem
    result = run_test_image(frugal, frugal.out / f"{stem}.qcow2")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.startswith("test-image: PASS")
    # Boot 1 follows the build's power-off, boot 2 the ACPI button's: each left the tce
    # partition (with the state binds on it) unmounted, so ext4 replays no journal.
    kept = frugal.build / "logs" / "test-image"
    for boot in (1, 2):
        serial = (kept / f"{stem}.qcow2.boot{boot}-serial.log").read_text(errors="replace")
        assert "EXT4-fs (sda1): mounted filesystem" in serial, serial[-3000:]
        assert "recovery complete" not in serial, (boot, serial[-3000:])
        # the recipe's live.install_only (the installer's tools) are not loaded at boot
        loading = re.search(r"^loading from /mnt/sda1/tce/optional: (.*?)\s*$", serial, re.M)
        assert loading, serial[-3000:]
        names = loading[1].split()
        assert "openssh.tcz" in names and "faasd.tcz" in names, names
        assert "e2fsprogs.tcz" not in names and "syslinux.tcz" not in names, names


# --- every disk bus and NIC an importer may choose ----------------------------------------

def boot_seconds(stdout: str) -> dict[str, list[float]]:
    """{variant: [seconds per boot]} from test-image's PASS lines (`boot 1: 19.2 s`)."""
    found = {}
    for match in re.finditer(r"^test-image: PASS \S+ \[(\S+)\] \(([^)]*)\)", stdout, re.M):
        found[match[1]] = [float(s) for s in re.findall(r"boot \d+: (\d+\.\d) s", match[2])]
    return found


def test_the_traditional_install_boots_on_every_bus_with_every_nic(traditional):
    """virtio-blk is what libvirt, OpenStack, GNOME Boxes and Proxmox attach, nvme what new
    VMware VMs get; the root is found by UUID, virtio_blk loaded from the base. One boot per
    variant keeps the suite short: the two-boot path is what the IDE tests above prove."""
    qcow2 = str(traditional.qcow2())
    argv = [sys.executable, str(REPO / "pipeline.py"), "test-image", qcow2, "--boots", "1"]
    runs = [
        argv + ["--disk-bus", "sata", "--disk-bus", "virtio-blk", "--disk-bus", "virtio-scsi",
                "--disk-bus", "nvme", "--nic", "e1000", "--nic", "virtio"],
        argv + ["--disk-bus", "ide", "--nic", "virtio", "--nic", "vmxnet3"],
    ]
    seen: dict[str, list[float]] = {}
    for run in runs:
        result = subprocess.run(run, cwd=REPO, env=traditional.env, capture_output=True,
                                text=True, timeout=DEMO_TIMEOUT_S)
        assert result.returncode == 0, result.stdout + result.stderr[-4000:]
        seen.update(boot_seconds(result.stdout))
    expected = {f"{b}+{n}" for b in ("sata", "virtio-blk", "virtio-scsi", "nvme")
                for n in ("e1000", "virtio")} | {"ide+virtio", "ide+vmxnet3"}
    assert set(seen) == expected, seen
    assert all(len(times) == 1 for times in seen.values()), seen  # --boots 1: one time each
    print("boot-to-ready under test-image:", seen)  # the note's table (pytest -s)


def test_the_frugal_install_boots_from_virtio_blk_by_uuid(frugal):
    stem = frugal.qcow2().stem
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "test-image", str(frugal.out / f"{stem}.qcow2"),
         "--disk-bus", "virtio-blk", "--nic", "virtio"],
        cwd=REPO, env=frugal.env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert len(boot_seconds(result.stdout)["virtio-blk+virtio"]) == 2
    serial = (frugal.build / "logs" / "test-image" /
              f"{stem}.qcow2.virtio-blk-virtio-boot2-serial.log").read_text(errors="replace")
    assert "tce=/mnt/vda1/tce " in serial  # the stand-in's boot line: tce= found by UUID on vda1
