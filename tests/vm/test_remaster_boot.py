"""The remastered stand-in ISO boots under QEMU with nobody at the keyboard, loads openssh
from the CD's /cde, restores mydata.tgz, takes SSH with the build key only, and says
APPLIANCE-LIVE on the serial console (docs/architecture.md#markers).

test_remastered_iso_boots_unattended: the remaster code on the stand-in's ISO and extensions.
test_pipeline_build_until_remaster: `pipeline.py build --until remaster` on the stand-in
recipe (the issue's "done when"), then the same boot of what it made.
Pass/fail is read from the serial console and over SSH, never from a sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config, keys
from appliance.config import RestoreItem
from appliance.fetch import sha256_file
from appliance.paths import REPO
from appliance.run import Runner
from appliance.stages.remaster import cde, restore
from appliance.stages.remaster.stage import Inputs, remaster
from appliance.tinycore import initrd
from appliance.tinycore import repository as tinycore
from appliance.vm.boot_check import free_port
from tests.standin import mirror as standin_mirror
from tests.standin import registry, releases, server
from tests.vm.guest_ssh import ssh, ssh_argv
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

RECIPE = REPO / "tests" / "standin" / "recipe.toml"
MARKER_TIMEOUT_S = 600  # BIOS + isolinux's 5 s + boot + /cde loads, under TCG
EPOCH = 1704067200
HASH = ("$6$remaster$2Tk0t5FSs4vFMFD7cmlP6JFqS8B7w2N6dgi3dKgvW0eUR4OQ1dIu9QhGqLAq/"
        "3Xh7tyQ3NdGdGfTCKWdhAF9R/")  # any valid SHA-512 crypt string; nobody logs in with it


@pytest.fixture(scope="module")
def standin():
    return standin_mirror.build_all()


def stand_in_extensions(standin) -> list[cde.Extension]:
    """The stand-in mirror's extensions, their .dep files followed, dependencies first."""
    tcz = next(standin.mirror.glob("*/x86_64/tcz"))
    names = sorted(p.name for p in tcz.glob("*.tcz"))
    deps = {}
    for name in names:
        dep = tcz / f"{name}.dep"
        text = dep.read_text() if dep.exists() else ""
        deps[name] = tinycore.parse_dep(text, standin.kernel.release)
    return [cde.Extension(n, tcz / n, deps[n], cde.md5_file(tcz / n))
            for n in tinycore.order(deps, names)]


def boot_and_check(iso: Path, key: Path, work: Path, expect: dict) -> None:
    """Boot `iso` without a key press; APPLIANCE-LIVE; then SSH in with `key` and look."""
    port = free_port()
    with VM(work, cdrom=iso, boot="d", hostfwd=[(port, 22)], memory_mb=768, name="live") as vm:
        # the services' marker, not the FIRSTBOOT or PHASE lines printed before it
        marker = vm.wait_for(r"^(APPLIANCE-(?:LIVE|READY|NOT-READY)\b.*)$",
                             MARKER_TIMEOUT_S).group(1)
        assert marker.strip() == "APPLIANCE-LIVE", vm.tail()
        serial = vm.serial_text()
        assert "Loading /boot/appliance.gz" in serial and "Loading /boot/build.gz" in serial
        assert "loading from /mnt/sr0/cde/optional: " in serial  # tce-setup, boot code cde
        probe = ssh(key, port, "; echo --; ".join([
            "id -un", "hostname", "readlink /usr/local/sbin/dropbear",
            "cat /sys/block/loop*/loop/backing_file", "cat /opt/tcemirror",
            "cat /proc/cmdline", "cat /var/log/appliance-boot.log",
            *[f"cat {p}" for p in expect.get("files", {})],
            "sudo grep '^tc:' /etc/shadow | cut -d: -f2",
        ]))
        assert probe.returncode == 0, probe.stderr + vm.tail()
        parts = probe.stdout.split("--\n")
        user, host, dropbear, backing, mirror, cmdline, log = parts[:7]
        assert user.strip() == "tc" and host.strip() == expect["hostname"]
        assert dropbear.startswith("/tmp/tcloop/openssh/")  # loaded with tce-load from the CD
        assert "/mnt/sr0/cde/optional/openssh.tcz" in backing.split()
        assert mirror.strip() == expect["mirror"]
        # the last console= is /dev/console (isolinux itself appends initrd= after APPEND)
        consoles = [t for t in cmdline.split() if t.startswith("console=")]
        assert consoles[-2:] == ["console=tty0", "console=ttyS0,115200"]
        assert "noembed" not in cmdline.split()
        if expect.get("files"):
            assert "restore=sr0" in cmdline.split()  # the only way to the CD's mydata.tgz
        assert "SSH server started" in log and "APPLIANCE-LIVE" in log
        for content, part in zip(expect.get("files", {}).values(), parts[7:], strict=False):
            assert part == content
        if "hash" in expect:
            assert parts[-1].strip() == expect["hash"]
        methods = subprocess.run(
            ssh_argv(None, port, "true", "-v", "-o", "PreferredAuthentications=none"),
            capture_output=True, text=True, timeout=60)
        assert "Authentications that can continue: publickey\n" in methods.stderr


def test_remastered_iso_boots_unattended(standin, tmp_path):
    exts = stand_in_extensions(standin)
    _private, public = keys.build_key(tmp_path / "keys", Runner(tmp_path, echo=lambda s: None))
    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.txt").write_text("restored from mydata.tgz\n")
    (site / "motd").write_text("tc-appliance live\n")
    mydata = restore.mydata_tgz([
        RestoreItem(source=str(site / "notes.txt"), path="home/tc/notes.txt"),
        RestoreItem(source=str(site / "motd"), path="etc/motd")], EPOCH)
    settings = initrd.LiveSettings("http://10.0.2.2:8911/", "remaster-vm",
                                   ("containerd", "faasd"), 120, HASH)
    inputs = Inputs(
        standin.iso, tuple(exts),
        tuple(cde.onboot_order(exts, ["openssh", "e2fsprogs", "syslinux"],
                               standin.kernel.release)),
        # what the remaster stage boots with: restore=sr0 added, since Tiny Core's restore
        # scan never looks at a CD (tc_noscan.lst) and the stand-in's does not either
        settings, tuple(config.live_codes_with_restore(["cde", "waitusb=1"], True)),
        "tc-appliance vm test", public, mydata, EPOCH)
    iso = remaster(inputs, tmp_path / "appliance.iso")
    boot_and_check(iso, tmp_path / "keys" / keys.KEY_NAME, tmp_path / "vm", {
        "hostname": "remaster-vm", "mirror": "http://10.0.2.2:8911/", "hash": HASH,
        "files": {"/home/tc/notes.txt": "restored from mydata.tgz\n",
                  "/etc/motd": "tc-appliance live\n"}})


def pipeline(root: Path, overlay: Path, verb: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPLIANCE_BUILD": str(root / "build")}
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), verb, "-c", str(RECIPE), "-c", str(overlay),
         "--lock", str(root / "standin.lock"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)


def test_pipeline_build_until_remaster(standin, tmp_path):
    """The issue's "done when": the stand-in recipe through the real stages (fetch, kernel,
    extensions, remaster) into a temporary build folder, served on a port of its own (with
    its own lock and overlay, so nobody else's server or build/standin files are touched)."""
    registry.ensure_running()  # the extensions stage pulls the recipe's images from it
    port = free_port()
    overlay = tmp_path / "standin.toml"
    versions = releases.versions(Runner(echo=lambda line: None))
    overlay.write_text(standin_mirror.overlay_text(standin.kernel.release, versions, port))
    with server.running(standin.mirror, port):
        locked = pipeline(tmp_path, overlay, "lock", "--accept-first-use")
        assert locked.returncode == 0, locked.stderr[-3000:]
        done = pipeline(tmp_path, overlay, "build", "--until", "remaster", "--locked")
        assert done.returncode == 0, done.stderr[-5000:]
    out = tmp_path / "build" / "remaster"
    iso = next(out.glob("appliance-*.iso"))
    assert (out / f"{iso.name}.sha256").read_text() == f"{sha256_file(iso)}  {iso.name}\n"
    cache = Path(os.environ.get("APPLIANCE_CACHE") or REPO / "cache")
    boot_and_check(iso, cache / "keys" / keys.KEY_NAME, tmp_path / "vm",
                   {"hostname": "tc-appliance", "mirror": f"http://10.0.2.2:{port}/"})
