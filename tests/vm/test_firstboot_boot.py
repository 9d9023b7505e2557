"""First boot on a real boot: the remastered stand-in ISO boots under QEMU with a NoCloud
seed attached as a disk (an iso9660 filesystem labelled cidata, as cloud-localds makes it);
/opt/firstboot.sh finds it with blkid, mounts it and applies it before the services job
says APPLIANCE-LIVE. Pass/fail is read from the serial console and over SSH, with the key
that only the seed carries."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from appliance import config, keys
from appliance.run import Runner
from appliance.stages.remaster import cde
from appliance.stages.remaster.stage import Inputs, remaster
from appliance.tinycore import initrd
from appliance.vm.boot_check import free_port
from tests.vm.firstboot_inputs import new_key, ovf_env_xml
from tests.vm.guest_ssh import ssh
from tests.vm.qemu_harness import VM
from tests.vm.test_remaster_boot import (
    EPOCH,
    HASH,
    MARKER_TIMEOUT_S,
    stand_in_extensions,
    standin,  # noqa: F401  (the module's fixture)
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]


def seed_disk(tmp: Path, public_key: str) -> Path:
    """meta-data + user-data in an iso9660 image labelled cidata (cloud-localds: genisoimage
    -volid cidata -joliet -rock)."""
    folder = tmp / "seed"
    folder.mkdir()
    (folder / "meta-data").write_text("instance-id: iid-vm-1\nlocal-hostname: seeded-vm\n")
    (folder / "user-data").write_text(f"""#cloud-config
ssh_authorized_keys:
  - {public_key}
users:
  - name: tc
    passwd: {HASH}
write_files:
  - path: /etc/motd
    content: |
      configured by the seed
runcmd:
  - [touch, /tmp/runcmd-ran]
packages: [git]
""")
    image = tmp / "seed.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-V", "cidata", "-J", "-r", "-o", str(image),
                    str(folder)], check=True, capture_output=True)
    return image


@pytest.fixture(scope="module")
def live(standin, tmp_path_factory):  # noqa: F811
    """The remastered stand-in ISO (the recipe's host name, no services)."""
    tmp = tmp_path_factory.mktemp("live")
    exts = stand_in_extensions(standin)
    _private, public = keys.build_key(tmp / "keys", Runner(tmp, echo=lambda s: None))
    settings = initrd.LiveSettings("http://10.0.2.2:8911/", "recipe-name", (), 120, None)
    inputs = Inputs(
        standin.iso, tuple(exts),
        tuple(cde.onboot_order(exts, ["openssh"], standin.kernel.release)),
        settings, tuple(config.live_codes_with_restore(["cde", "waitusb=1"], False)),
        "tc-appliance first boot vm test", public, None, EPOCH)
    return remaster(inputs, tmp / "appliance.iso")


def test_a_nocloud_seed_configures_the_live_system(live, tmp_path):
    iso = live
    seed_key, seed_public = new_key(tmp_path)
    disk = seed_disk(tmp_path, seed_public)
    port = free_port()
    with VM(tmp_path / "vm", cdrom=iso, boot="d", disks=[disk], hostfwd=[(port, 22)],
            memory_mb=768, name="firstboot") as vm:
        line = vm.wait_for(r"^APPLIANCE-FIRSTBOOT: (.*?)\r?$", MARKER_TIMEOUT_S).group(1)
        assert line == ("applied nocloud iid-vm-1 "
                        "hostname,ssh_authorized_keys,password,write_files,runcmd"), vm.tail()
        vm.wait_for(r"^APPLIANCE-LIVE", 120)
        probe = ssh(seed_key, port, "; echo --; ".join([
            "hostname", "cat /etc/motd", "ls /tmp/runcmd-ran",
            "sudo grep '^tc:' /etc/shadow | cut -d: -f2",
            "sudo ls -ld /var/lib/appliance/firstboot", "cat /var/log/appliance-boot.log"]))
        assert probe.returncode == 0, probe.stderr + vm.tail()
        host, motd, ran, shadow, state, log = probe.stdout.split("--\n")
        assert host.strip() == "seeded-vm"
        assert motd == "configured by the seed\n" and ran.strip() == "/tmp/runcmd-ran"
        assert shadow.strip() == HASH
        assert state.startswith("drwx------")
        assert "top level: packages is not supported; ignored" in log
        assert HASH not in vm.serial_text() and HASH not in log


def test_an_ovf_environment_on_a_cd_configures_the_live_system(live, tmp_path):
    """ovf-env.xml on an iso9660 filesystem (the OVF "iso" transport), found by its type."""
    key, public = new_key(tmp_path)
    folder = tmp_path / "ovfenv"
    folder.mkdir()
    (folder / "ovf-env.xml").write_text(ovf_env_xml("ovf-vm", public))
    disk = tmp_path / "ovf-env.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-V", "OVF ENV", "-J", "-r", "-o", str(disk),
                    str(folder)], check=True, capture_output=True)
    port = free_port()
    with VM(tmp_path / "vm", cdrom=live, boot="d", disks=[disk], hostfwd=[(port, 22)],
            memory_mb=768, name="ovf") as vm:
        line = vm.wait_for(r"^APPLIANCE-FIRSTBOOT: (.*?)\r?$", MARKER_TIMEOUT_S).group(1)
        assert re.fullmatch(r"applied ovf [0-9a-f]{16} hostname,ssh_authorized_keys", line), \
            vm.tail()
        vm.wait_for(r"^APPLIANCE-LIVE", 120)
        probe = ssh(key, port, "hostname")
        assert probe.returncode == 0, probe.stderr + vm.tail()
        assert probe.stdout.strip() == "ovf-vm"
