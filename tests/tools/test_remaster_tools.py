"""The remaster against real tools: a base ISO made by xorriso (lowercase ISO 9660 names, as
Tiny Core's are), xorriso's own reading of the result, shellcheck, and the boot scripts
run by busybox sh (Tiny Core's shell) with their paths pointed into a temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from appliance.stages.remaster import cde
from appliance.stages.remaster.stage import TEMPLATES, Inputs, remaster
from appliance.tinycore import initrd
from tests.standin.iso import ISOLINUX_BIN, LDLINUX_C32, xorriso_argv
from tests.tools.test_init_functions import INIT_SCRIPTS, functions
from tests.unit.test_isolinux import STOCK
from tests.unit.test_remaster import EPOCH, KEY, Opened, base_initrd, extensions

pytestmark = pytest.mark.tools

SCRIPTS = sorted(TEMPLATES.glob("*.sh"))


def xorriso_iso(tmp: Path) -> Path:
    """A CorePure64-11.1-shaped ISO as the stand-in makes it: xorriso -as mkisofs -l -J -r,
    isolinux with boot-info-table, isohybrid MBR."""
    staging = tmp / "staging"
    (staging / "boot" / "isolinux").mkdir(parents=True)
    (staging / "boot" / "vmlinuz64").write_bytes(b"kernel" * 5000)
    (staging / "boot" / "corepure64.gz").write_bytes(base_initrd())
    shutil.copyfile(ISOLINUX_BIN, staging / "boot" / "isolinux" / "isolinux.bin")
    shutil.copyfile(LDLINUX_C32, staging / "boot" / "isolinux" / "ldlinux.c32")
    (staging / "boot" / "isolinux" / "isolinux.cfg").write_text(STOCK)
    out = tmp / "CorePure64-11.1.iso"
    subprocess.run(xorriso_argv(staging, out, EPOCH), check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "SOURCE_DATE_EPOCH": str(EPOCH)})
    return out


def report(iso: Path, what: str) -> dict[str, str]:
    """xorriso's `-report_el_torito plain` / `-report_system_area plain`, as label -> value."""
    proc = subprocess.run(["xorriso", "-indev", str(iso), f"-report_{what}", "plain"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True)
    lines = [ln.split(":", 1) for ln in proc.stdout.splitlines() if ":" in ln]
    return {k.strip(): v.strip() for k, v in lines}


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xorriso")
    base = xorriso_iso(tmp)
    exts = extensions(tmp)
    inputs = Inputs(base, tuple(exts), tuple(cde.onboot_order(exts, ["openssh"], "x")),
                    initrd.LiveSettings("http://10.0.2.2:8911/", "t", (), 60), ("cde",), "t",
                    KEY, None, EPOCH)
    return base, remaster(inputs, tmp / "appliance.iso")


def test_xorriso_sees_the_same_el_torito_boot(isos):
    base, out = isos
    before, after = report(base, "el_torito"), report(out, "el_torito")
    assert after["El Torito img path"] == "1  /boot/isolinux/isolinux.bin"
    assert after["El Torito img opts"] == "1  boot-info-table isohybrid-suitable"
    assert after["El Torito cat path"] == "/boot/isolinux/boot.cat"
    boot = after["El Torito boot img"].split()
    assert boot[:7] == before["El Torito boot img"].split()[:7]  # BIOS, bootable, no emulation, 4 sectors
    assert boot[1:4] == ["BIOS", "y", "none"] and boot[6] == "4"
    assert after["Boot record"] == "El Torito , MBR isohybrid cyl-align-on"


def test_xorriso_sees_the_isohybrid_mbr_cover_the_new_image(isos):
    _base, out = isos
    area = report(out, "system_area")
    assert area["System area summary"] == "MBR isohybrid cyl-align-on"
    status, ptype, start, blocks = area["MBR partition"].split()[1:5]
    assert (status, ptype, start) == ("0x80", "0x17", "0")
    assert int(blocks) * 512 == out.stat().st_size


def test_xorriso_reads_the_rock_ridge_tree(isos):
    _base, out = isos
    proc = subprocess.run(["xorriso", "-indev", str(out), "-find", "/", "-type", "f"],
                          capture_output=True, text=True, check=True)
    files = set(re.findall(r"'([^']+)'", proc.stdout))
    assert {"/boot/appliance.gz", "/boot/build.gz", "/boot/isolinux/isolinux.cfg",
            "/cde/onboot.lst", "/cde/optional/openssh.tcz",
            "/cde/optional/openssh.tcz.md5.txt", "/cde/optional/openssh.tcz.dep"} <= files
    assert Opened(out).read("/boot/isolinux/isolinux.cfg").startswith(b"# Written by tc-appliance")


def test_boot_scripts_pass_shellcheck():
    assert SCRIPTS, "no shell scripts in iso-remaster/"
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, SCRIPTS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- bootlocal.sh: the services job and its markers (busybox sh) -----------------------------


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def service(initd: Path, name: str, start: str = "exit 0", status: str = "exit 0") -> Path:
    return script(initd / name, f"""echo "$1" >> "{initd}/{name}.calls"
case "$1" in start) {start} ;; status) {status} ;; esac
""")


def run_bootlocal(tmp: Path, services: str, timeout: int = 60,
                  mounts: str = "/dev/sda1 / ext4 rw 0 0\n", **extra: str) -> tuple[str, str]:
    """The marker bootlocal.sh writes to the console (waited for), and its log."""
    conf = tmp / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "services").write_text(services)
    (conf / "ready_timeout").write_text(f"{timeout}\n")
    console = tmp / "console"
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_CONF": str(conf), "TMPDIR": str(tmp),
           "APPLIANCE_LOG": str(tmp / "boot.log"), "APPLIANCE_INITD": str(tmp / "init.d"),
           "APPLIANCE_CONSOLE": str(console), "APPLIANCE_MOUNTS": str(tmp / "mounts"),
           "APPLIANCE_FIRSTBOOT": "true", "APPLIANCE_SERVICES_DONE": str(tmp / "services.done"),
           **extra}  # tests/tools/test_firstboot_tools.py runs it
    (tmp / "mounts").write_text(mounts)
    subprocess.run(["busybox", "sh", str(TEMPLATES / "bootlocal.sh")], env=env, check=True,
                   timeout=10)  # returns at once: the job runs in the background
    deadline = time.monotonic() + timeout + 20
    while not (marker := marker_lines(console)):
        assert time.monotonic() < deadline, (tmp / "boot.log").read_text()
        time.sleep(0.2)
    return marker, (tmp / "boot.log").read_text()


def marker_lines(console: Path) -> str:
    """The console's lines but the boot timeline's (APPLIANCE-PHASE, tested on their own)."""
    if not console.exists() or not console.read_text().endswith("\n"):
        return ""
    lines = console.read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("APPLIANCE-PHASE "))


def calls(tmp: Path, name: str) -> list[str]:
    path = tmp / "init.d" / f"{name}.calls"
    return path.read_text().split() if path.exists() else []


def test_live_when_no_service_is_loaded(tmp_path):
    (tmp_path / "init.d").mkdir()
    marker, log = run_bootlocal(tmp_path, "containerd\nfaasd\n")
    assert marker == "APPLIANCE-LIVE\n"
    assert "containerd: " in log and "is not loaded; skipped" in log


def test_services_on_the_initramfs_root_are_never_ready(tmp_path):
    """The marker test-image fails on: containers must run on the disk, not the initramfs."""
    service(tmp_path / "init.d", "containerd")
    mounts = "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n"
    marker, _ = run_bootlocal(tmp_path, "containerd\n", mounts=mounts)
    assert marker == "APPLIANCE-NOT-READY root-on-initramfs\n"
    assert calls(tmp_path, "containerd") == []
    # the frugal install's / is the tmpfs noembed switch_roots to (rootfs stays below it)
    frugal = tmp_path / "frugal"
    service(frugal / "init.d", "containerd")
    tmpfs = "rootfs / rootfs rw 0 0\ntmpfs / tmpfs rw 0 0\n"
    assert run_bootlocal(frugal, "containerd\n", mounts=tmpfs)[0] == "APPLIANCE-READY\n"


def test_live_when_the_recipe_has_no_services(tmp_path):
    assert run_bootlocal(tmp_path, "")[0] == "APPLIANCE-LIVE\n"


def test_ready_after_start_then_status_in_order(tmp_path):
    service(tmp_path / "init.d", "containerd")
    service(tmp_path / "init.d", "faasd")
    marker, log = run_bootlocal(tmp_path, "containerd\nfaasd\n../evil\n")
    assert marker == "APPLIANCE-READY\n"
    assert calls(tmp_path, "containerd") == calls(tmp_path, "faasd") == ["start", "status"]
    assert log.index("containerd status") < log.index("faasd start")


def test_missing_service_is_skipped_and_the_rest_is_ready(tmp_path):
    service(tmp_path / "init.d", "faasd")
    assert run_bootlocal(tmp_path, "containerd\nfaasd\n")[0] == "APPLIANCE-READY\n"


def test_failed_start_is_not_ready_and_stops_there(tmp_path):
    service(tmp_path / "init.d", "containerd", start="exit 1")
    service(tmp_path / "init.d", "faasd")
    assert run_bootlocal(tmp_path, "containerd\nfaasd\n")[0] == "APPLIANCE-NOT-READY containerd\n"
    assert calls(tmp_path, "faasd") == []


def test_unhealthy_status_is_not_ready(tmp_path):
    service(tmp_path / "init.d", "containerd")
    service(tmp_path / "init.d", "faasd", status="exit 1")
    assert run_bootlocal(tmp_path, "containerd\nfaasd\n")[0] == "APPLIANCE-NOT-READY faasd\n"


def test_a_start_that_outlasts_ready_timeout_is_stopped(tmp_path):
    pidfile = tmp_path / "sleeper.pid"
    service(tmp_path / "init.d", "containerd", start=f"sleep 300 & echo $! > {pidfile}; wait")
    begin = time.monotonic()
    marker, log = run_bootlocal(tmp_path, "containerd\n", timeout=3)
    assert marker == "APPLIANCE-NOT-READY containerd\n"
    assert time.monotonic() - begin < 15
    assert "did not finish in time; stopped" in log
    assert gone(int(pidfile.read_text()))  # the init script's child was stopped too


def gone(pid: int, wait_s: float = 5) -> bool:
    """True once `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


# --- bootsync.sh: host name, password hash once, SSH ----------------------------------------

SHADOW = "root:*:18000:0:99999:7:::\ntc:$6$old$old:18000:0:99999:7:::\n"
NEW_HASH = "$6$rounds=5000$saltsalt$" + "b" * 86


def run_bootsync(tmp: Path, **extra: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_CONF": str(tmp / "conf"),
           "APPLIANCE_TCEDIR_LINK": str(tmp / "tcedir"),
           "APPLIANCE_CONSOLE": str(tmp / "console"), "APPLIANCE_PROC": str(tmp / "proc"),
           "APPLIANCE_SERVICES_DONE": str(tmp / "services.done"), "APPLIANCE_SSH_WAIT": "5",
           **extra,
           "APPLIANCE_LOG": str(tmp / "boot.log"), "APPLIANCE_INITD": str(tmp / "init.d"),
           "APPLIANCE_SSH_DIR": str(tmp / "ssh"), "APPLIANCE_SHADOW": str(tmp / "shadow"),
           "APPLIANCE_SETHOSTNAME": str(tmp / "sethostname"),
           "APPLIANCE_BOOTLOCAL": str(tmp / "bootlocal")}
    subprocess.run(["busybox", "sh", str(TEMPLATES / "bootsync.sh")], env=env, check=True,
                   timeout=120)
    deadline = time.monotonic() + 10
    log = tmp / "boot.log"
    # bootlocal and the SSH job (host keys, the server) both run in the background
    while not ((tmp / "bootlocal.ran").exists() and "SSH job done" in log.read_text()):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return log.read_text()


@pytest.fixture
def guest(tmp_path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "hostname").write_text("tc-x\n")
    (tmp_path / "conf" / "tc_password_hash").write_text(NEW_HASH + "\n")
    (tmp_path / "shadow").write_text(SHADOW)
    (tmp_path / "shadow").chmod(0o640)
    script(tmp_path / "sethostname", f'echo "$1" > {tmp_path}/hostname.set\n')
    # bootlocal.sh's marker() leaves services.done, which a first boot's SSH job waits for
    script(tmp_path / "bootlocal", f"touch {tmp_path}/bootlocal.ran {tmp_path}/services.done\n")
    service(tmp_path / "init.d", "openssh")
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "sshd_config.orig").write_text("#PasswordAuthentication yes\nPort 22\n")
    return tmp_path


def test_bootsync_sets_the_host_and_the_hash_once_and_starts_ssh_key_only(guest):
    log = run_bootsync(guest)
    assert (guest / "hostname.set").read_text() == "tc-x\n"
    lines = (guest / "shadow").read_text().splitlines()
    assert lines[0] == "root:*:18000:0:99999:7:::"
    assert lines[1] == f"tc:{NEW_HASH}:18000:0:99999:7:::"
    assert oct((guest / "shadow").stat().st_mode & 0o777) == "0o640"  # kept
    assert not (guest / "conf" / "tc_password_hash").exists()  # applied once
    config = (guest / "ssh" / "sshd_config").read_text().splitlines()
    assert config[1:4] == ["PasswordAuthentication no", "ChallengeResponseAuthentication no",
                           "PermitRootLogin no"]
    assert config[-1] == "Port 22"
    assert calls(guest, "openssh") == ["start"] and "SSH server started" in log
    if shutil.which("ssh-keygen"):
        assert (guest / "ssh" / "ssh_host_ed25519_key").exists()
    # a password changed later (or a second boot) is left alone
    (guest / "shadow").write_text(SHADOW)
    (guest / "bootlocal.ran").unlink()
    run_bootsync(guest)
    assert (guest / "shadow").read_text() == SHADOW


LOCKED = "root:*:18000:0:99999:7:::\ntc:*:18000:0:99999:7:::\n"


def test_bootsync_ignores_a_hash_that_is_not_sha512_and_locks_tc(guest):
    (guest / "conf" / "tc_password_hash").write_text("plainpassword\n")
    log = run_bootsync(guest)
    assert (guest / "shadow").read_text() == LOCKED
    assert "not a SHA-512 crypt hash" in log and "plainpassword" not in log


def test_bootsync_without_a_hash_locks_tcs_default_password_once(guest):
    (guest / "conf" / "tc_password_hash").unlink()
    log = run_bootsync(guest)
    assert (guest / "shadow").read_text() == LOCKED  # no more "tcuser" at the console
    assert "password of tc locked" in log
    (guest / "shadow").write_text(SHADOW)  # a password set later by the owner stays
    (guest / "bootlocal.ran").unlink()
    run_bootsync(guest)
    assert (guest / "shadow").read_text() == SHADOW


def test_bootsync_starts_acpid_for_the_power_button_when_there_is_one(guest):
    script(guest / "acpid", f'echo "$@" > {guest}/acpid.args\n')
    log = run_bootsync(guest, APPLIANCE_ACPID=str(guest / "acpid"))
    assert (guest / "acpid.args").read_text().split() == ["-c", "/usr/local/etc/acpi/events"]
    assert "acpid started" in log
    (guest / "bootlocal.ran").unlink()
    log = run_bootsync(guest, APPLIANCE_ACPID=str(guest / "no-such-acpid"))
    assert "acpid.tcz is not loaded): the power button will do nothing" in log


def test_bootsync_without_an_ssh_server_says_so_and_goes_on(guest):
    (guest / "init.d" / "openssh").unlink()
    log = run_bootsync(guest)
    assert "no SSH server" in log and (guest / "bootlocal.ran").exists()


# --- bootsync.sh on a frugal install: state from the disk ----------------------------------

STATE_DIRS = ("var/lib/containerd", "var/lib/faasd", "var/lib/faasd-provider", "var/lib/appliance")


def mounts_on(target: Path) -> int:
    return sum(1 for line in Path("/proc/mounts").read_text().splitlines()
               if line.split()[1] == str(target))


@pytest.fixture
def frugal(guest):
    """A disk with tce/ and appliance-state/ (as install-to-disk.sh leaves it) and the
    tcedir link Tiny Core makes at boot; the binds are undone afterwards."""
    state = guest / "disk" / "appliance-state"
    (guest / "disk" / "tce").mkdir(parents=True)
    (state / "var/lib/containerd").mkdir(parents=True)
    (state / "var/lib/containerd" / "kept").write_text("from the last boot\n")
    (state / "ssh").mkdir()
    (state / "ssh" / "dropbear_ed25519_host_key").write_text("old host key\n")
    (guest / "tcedir").symlink_to(guest / "disk" / "tce")
    yield guest
    for sub in STATE_DIRS:
        while mounts_on(guest / "root" / sub):
            subprocess.run(["umount", str(guest / "root" / sub)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root (CI runs as root)")
def test_bootsync_binds_the_state_from_the_disk_once_and_keeps_host_keys(frugal):
    root = frugal / "root"
    log = run_bootsync(frugal, APPLIANCE_ROOT=str(root))
    assert (root / "var/lib/containerd" / "kept").read_text() == "from the last boot\n"
    for sub in STATE_DIRS:
        assert mounts_on(root / sub) == 1, sub
        assert f"{root}/{sub} is kept on the disk" in log
    (root / "var/lib/faasd" / "secret").write_text("written at run time\n")
    assert (frugal / "disk/appliance-state/var/lib/faasd/secret").exists()  # on the disk
    ssh_dir = frugal / "ssh"
    assert (ssh_dir / "dropbear_ed25519_host_key").read_text() == "old host key\n"
    if shutil.which("ssh-keygen"):  # made at this boot, copied to the disk for the next
        assert (frugal / "disk/appliance-state/ssh/ssh_host_ed25519_key").is_file()
    (frugal / "bootlocal.ran").unlink()
    run_bootsync(frugal, APPLIANCE_ROOT=str(root))  # a second run binds nothing twice
    assert all(mounts_on(root / sub) == 1 for sub in STATE_DIRS)


def test_bootsync_binds_nothing_without_appliance_state(guest):
    (guest / "disk" / "tce").mkdir(parents=True)
    (guest / "tcedir").symlink_to(guest / "disk" / "tce")
    log = run_bootsync(guest, APPLIANCE_ROOT=str(guest / "root"))
    assert "kept on the disk" not in log and not (guest / "root").exists()


# --- appliance-stop.sh: services stopped last-first, bounded, then the power action ---------


def run_stop(tmp: Path, *args: str, timeout: int = 2) -> tuple[subprocess.CompletedProcess, str]:
    console = tmp / "console"
    console.touch()
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_CONF": str(tmp / "conf"),
           "APPLIANCE_LOG": str(tmp / "stop.log"), "APPLIANCE_INITD": str(tmp / "init.d"),
           "APPLIANCE_CONSOLE": str(console), "APPLIANCE_STOP_TIMEOUT": str(timeout),
           "APPLIANCE_LOCK": str(tmp / "lock"), "APPLIANCE_POWER": str(tmp / "power"),
           "APPLIANCE_BOOT_ID": str(tmp / "boot_id")}
    done = subprocess.run(["busybox", "sh", str(TEMPLATES / "appliance-stop.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=60)
    return done, console.read_text()


def stop_guest(tmp: Path, hanging: str = "") -> None:
    (tmp / "boot_id").write_text("boot-2\n")
    (tmp / "conf").mkdir()
    (tmp / "conf" / "services").write_text("containerd\nfaasd\nnotloaded\n")
    order = tmp / "order"
    for name in ("containerd", "faasd"):
        stop = "sleep 30" if name == hanging else f'echo {name} >> "{order}"'
        script(tmp / "init.d" / name, f'[ "$1" = stop ] && {stop}\nexit 0\n')
    script(tmp / "power" / "poweroff", f'echo poweroff >> "{order}"\n')
    script(tmp / "power" / "reboot", f'echo reboot >> "{order}"\n')


def test_stop_runs_services_last_first_then_powers_off(tmp_path):
    stop_guest(tmp_path)
    done, console = run_stop(tmp_path, "poweroff")
    assert done.returncode == 0, done.stderr
    assert console == "APPLIANCE-STOP faasd ok\nAPPLIANCE-STOP containerd ok\n"
    assert (tmp_path / "order").read_text().split() == ["faasd", "containerd", "poweroff"]
    assert "notloaded is not loaded" in (tmp_path / "stop.log").read_text()


def test_a_hanging_stop_is_cut_short_and_reported(tmp_path):
    stop_guest(tmp_path, hanging="faasd")
    start = time.monotonic()
    done, console = run_stop(tmp_path, "reboot", timeout=2)
    assert time.monotonic() - start < 20
    assert console == "APPLIANCE-STOP faasd timeout\nAPPLIANCE-STOP containerd ok\n"
    assert (tmp_path / "order").read_text().split() == ["containerd", "reboot"]


def test_without_an_action_it_only_stops_and_can_run_again(tmp_path):
    stop_guest(tmp_path)
    assert run_stop(tmp_path)[0].returncode == 0
    done, console = run_stop(tmp_path, "poweroff")  # cleanup.sh, then Packer's shutdown
    assert done.returncode == 0
    assert (tmp_path / "order").read_text().split() == [
        "faasd", "containerd", "faasd", "containerd", "poweroff"]
    assert run_stop(tmp_path, "halt")[0].returncode == 2


def test_a_lock_left_by_an_earlier_boot_does_not_block_the_stop(tmp_path):
    # a traditional install keeps /tmp on the disk: the lock of the last power-off survives
    stop_guest(tmp_path)
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "owner").write_text(f"boot-1 {os.getpid()}\n")
    done, console = run_stop(tmp_path, "poweroff")
    assert done.returncode == 0 and console.count("APPLIANCE-STOP") == 2
    assert (tmp_path / "order").read_text().split()[-1] == "poweroff"


def test_a_running_stop_of_this_boot_is_left_to_finish(tmp_path):
    stop_guest(tmp_path)
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "owner").write_text(f"boot-2 {os.getpid()}\n")  # alive: this test
    done, console = run_stop(tmp_path, "poweroff")
    assert done.returncode == 0 and console == "" and not (tmp_path / "order").exists()


def test_a_lock_without_its_owner_yet_is_a_stop_just_started(tmp_path):
    stop_guest(tmp_path)
    (tmp_path / "lock").mkdir()  # the other stop has made the lock, not yet written owner
    done, console = run_stop(tmp_path, "poweroff")
    assert done.returncode == 0 and console == "" and not (tmp_path / "order").exists()


def test_the_second_event_of_one_press_after_the_power_off_began_stops_nothing(tmp_path):
    # acpid2 gets one press twice (input layer and netlink) and runs the actions in turn: the
    # second comes after the first has exec'd poweroff, so its pid is gone (seen in CI)
    stop_guest(tmp_path)
    assert run_stop(tmp_path, "poweroff")[1].count("APPLIANCE-STOP") == 2
    done, console = run_stop(tmp_path, "poweroff")
    assert done.returncode == 0 and console.count("APPLIANCE-STOP") == 2  # none added
    assert (tmp_path / "order").read_text().split() == ["faasd", "containerd", "poweroff"]
    (tmp_path / "boot_id").write_text("boot-3\n")  # the next boot stops again
    assert run_stop(tmp_path, "poweroff")[1].count("APPLIANCE-STOP") == 4


def test_bootsync_starts_the_services_without_waiting_for_ssh(guest):
    # the SSH start (host keys at a first boot: seconds under TCG) succeeds only once
    # bootlocal.sh has started: it would time out if bootsync ran them one after the other
    wait = f'n=0; while [ ! -e {guest}/bootlocal.ran ]; do n=$((n+1)); [ $n -gt 50 ] && exit 1; usleep 100000; done'
    service(guest / "init.d", "openssh", start=wait)
    log = run_bootsync(guest)
    assert "SSH server started" in log, log


def test_a_first_boot_starts_ssh_only_once_the_services_have_their_marker(guest):
    # no host key: the SSH job waits for services.done (bootlocal.sh's marker()); a start
    # before it fails here, and the fake bootlocal leaves it only once the job said it waits
    done = guest / "services.done"
    service(guest / "init.d", "openssh", start=f"[ -e {done} ]")
    script(guest / "bootlocal", f"""n=0
until grep -q 'no SSH host keys yet' {guest}/boot.log || [ $n -ge 200 ]; do
    usleep 50000; n=$((n + 1)); done; touch {guest}/bootlocal.ran {done}
""")
    log = run_bootsync(guest, APPLIANCE_SSH_WAIT="60")
    assert "the SSH server starts after the services" in log
    assert "SSH server started" in log, log


def test_a_later_boot_starts_ssh_at_once(guest):
    (guest / "ssh" / "dropbear_ed25519_host_key").write_text("made at the first boot\n")
    script(guest / "bootlocal", f"touch {guest}/bootlocal.ran\n")  # no marker, ever
    log = run_bootsync(guest, APPLIANCE_SSH_WAIT="60")  # run_bootsync waits 10 s at most
    assert "SSH server started" in log and "no SSH host keys yet" not in log


def test_a_first_boot_without_a_marker_starts_ssh_after_the_wait(guest):
    script(guest / "bootlocal", f"touch {guest}/bootlocal.ran\n")  # services hung: no marker
    log = run_bootsync(guest, APPLIANCE_SSH_WAIT="1")
    assert "no SSH host keys yet" in log and "SSH server started" in log


def test_a_marker_left_by_the_last_boot_is_not_taken_for_this_ones(guest):
    done = guest / "services.done"
    done.touch()  # a traditional install's /var/run is on the disk
    service(guest / "init.d", "openssh", start=f"[ -e {done} ]")
    script(guest / "bootlocal", f"touch {guest}/bootlocal.ran\n")  # this boot's: none yet
    log = run_bootsync(guest, APPLIANCE_SSH_WAIT="1")
    assert "SSH server did not start" in log, log


def appears(path: Path, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.exists()


def test_bootlocal_leaves_the_services_marker_for_the_ssh_job(tmp_path):
    done = tmp_path / "services.done"
    (tmp_path / "init.d").mkdir()
    assert run_bootlocal(tmp_path, "containerd\n")[0] == "APPLIANCE-LIVE\n"
    assert appears(done)  # written right after the marker line
    done.unlink()
    (tmp_path / "console").unlink()
    service(tmp_path / "init.d", "containerd", status="exit 1")
    assert run_bootlocal(tmp_path, "containerd\n")[0] == "APPLIANCE-NOT-READY containerd\n"
    assert appears(done)


# --- the boot timeline: APPLIANCE-PHASE lines (appliance/vm/timeline.py reads them) ----------

PHASE = re.compile(r"^APPLIANCE-PHASE (\S+) (\d+\.\d\d)(?: (.*))?$")


def fake_proc(root: Path, uptime: str = "12.34 3.10", pid1_ticks: int = 191) -> Path:
    """/proc/uptime and /proc/1/stat, pid 1 named with a blank and a paren (as a comm may be)."""
    proc = root / "proc"
    (proc / "1").mkdir(parents=True, exist_ok=True)
    (proc / "uptime").write_text(uptime + "\n")
    rest = " ".join(["S", "0", "1", "1", "0", "-1", "4194560"] + ["0"] * 12 + [str(pid1_ticks)])
    (proc / "1" / "stat").write_text(f"1 (in it) x) {rest} 1234 5\n")
    return proc


def phases(text: str) -> list[tuple[str, ...]]:
    return [m.groups("") for m in map(PHASE.match, text.splitlines()) if m]


def test_bootsync_prints_kernel_extensions_bootsync_before_it_starts_bootlocal(guest):
    fake_proc(guest)
    script(guest / "bootlocal",
           f"echo BOOTLOCAL >> {guest}/console; touch {guest}/bootlocal.ran {guest}/services.done\n")
    log = run_bootsync(guest)
    console = (guest / "console").read_text()
    # kernel: pid 1's start time, 191 ticks at USER_HZ 100; the others: /proc/uptime
    assert phases(console) == [("kernel", "1.91", ""), ("extensions", "12.34", ""),
                               ("bootsync", "12.34", "")]
    assert console.index("APPLIANCE-PHASE bootsync") < console.index("BOOTLOCAL")
    assert [p[0] for p in phases(log)] == ["kernel", "extensions", "bootsync"]


def test_bootsync_boots_on_without_proc_or_console(guest):
    """Best effort: no /proc, no console: no phase line, and the boot goes on."""
    log = run_bootsync(guest, APPLIANCE_CONSOLE=str(guest / "no" / "console"))
    assert phases(log) == []
    assert calls(guest, "openssh") == ["start"]


def test_bootlocal_prints_ready_before_the_marker_and_lets_services_print_theirs(tmp_path):
    proc = fake_proc(tmp_path, uptime="40.00 1.00")
    script(tmp_path / "init.d" / "containerd",
           'echo "phases=$APPLIANCE_PHASES proc=$APPLIANCE_PROC console=$APPLIANCE_CONSOLE"'
           ' >> "$APPLIANCE_LOG"\nexit 0\n')
    run_bootlocal(tmp_path, "containerd\n", APPLIANCE_PROC=str(proc))
    deadline = time.monotonic() + 20  # the console's first line may be the phase line
    while "APPLIANCE-READY" not in (log := (tmp_path / "boot.log").read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.2)
    assert f"phases=1 proc={proc} console={tmp_path / 'console'}" in log
    assert phases(log) == [("firstboot", "40.00", ""), ("ready", "40.00", "")]
    assert log.index("APPLIANCE-PHASE ready 40.00") < log.index("APPLIANCE-READY")


def run_phase(name: str, tmp: Path, args: str, **env: str) -> subprocess.CompletedProcess:
    """The init script's own phase function, under its `set -eu`, in busybox sh."""
    program = f"set -eu\n{functions(name, 'phase')}\nphase {args}\necho survived\n"
    return subprocess.run(["busybox", "sh", "-c", program], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=10)


@pytest.mark.parametrize("name", ["containerd", "faasd"])
def test_init_script_phases_only_when_bootlocal_started_it(tmp_path, name):
    proc = fake_proc(tmp_path, uptime="21.50 1.00")
    where = {"APPLIANCE_CONSOLE": str(tmp_path / "console"), "APPLIANCE_PROC": str(proc),
             "APPLIANCE_LOG": str(tmp_path / "boot.log")}
    manual = run_phase(name, tmp_path, "cgroups", **where)  # a restart by hand: silent
    assert manual.stdout == "survived\n" and not (tmp_path / "console").exists()
    booting = run_phase(name, tmp_path, "images 'imported=0 present=3'", APPLIANCE_PHASES="1",
                        **where)
    assert booting.stdout == "survived\n"
    for path in (tmp_path / "console", tmp_path / "boot.log"):
        assert path.read_text() == "APPLIANCE-PHASE images 21.50 imported=0 present=3\n"
    broken = run_phase(name, tmp_path, "gateway", APPLIANCE_PHASES="1",
                       APPLIANCE_CONSOLE=str(tmp_path / "no" / "console"),
                       APPLIANCE_PROC=str(tmp_path / "none"), APPLIANCE_LOG="/nonexistent/x")
    assert broken.returncode == 0 and broken.stdout == "survived\n"


def calls_in_order(text: str, *calls: str) -> bool:
    where = [text.index(c) for c in calls]
    return where == sorted(where)


def test_init_scripts_print_each_phase_at_its_point():
    containerd = INIT_SCRIPTS["containerd"].read_text()
    start = containerd[containerd.index("\nstart() {"):]
    assert calls_in_order(start, "mount_cgroups\n", "phase cgroups\n")
    dispatch = containerd[containerd.index('case "${1:-}" in'):]
    assert calls_in_order(dispatch, "start)\n\tstart\n", "phase containerd\n")
    faasd = INIT_SCRIPTS["faasd"].read_text()
    start = faasd[faasd.index("\nstart() {"):]
    assert calls_in_order(start, "import_images\n", 'phase images "imported=$imported '
                          'present=$present"', '"$PROVIDER_HEALTH"', "phase provider\n",
                          '"$GATEWAY_HEALTH"', "phase gateway\n")
    for text in (containerd, faasd):  # a restart (faasd's of containerd too) prints none
        restart = text[text.index("\nrestart)"):]
        assert restart.index("APPLIANCE_PHASES=") < restart.index("\tstart\n")
