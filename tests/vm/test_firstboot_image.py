"""First boot of the demo appliance as a user imports it (issue: first boot).

The traditional demo's exported qcow2 boots on a copy-on-write overlay with a CD that
`appliance/vm/seed_iso.py` makes (the code behind `test-image --seed/--ovf-env`), three
times in a row on the same overlay, as one imported copy:
1. a NoCloud seed (instance-id iid-one): host name, an SSH key of this test, a password hash,
   a static IPv4 on QEMU's user network (/25, which DHCP would never give), faasd's
   password. Checked over SSH with that key and over HTTP through forwarded ports;
2. a new instance-id whose user-data is malformed: one ERROR line, the meta-data's host name
   applied, APPLIANCE-READY all the same;
3. an OVF environment CD (VMware's ISO transport) and no seed: host name and a second key.
The second boot with an unchanged instance-id is test_demo.py's test-image run with --seed.
Pass/fail comes from the serial console, SSH and HTTP, never from a sleep.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.vm import seed_iso
from appliance.vm.boot_check import free_port
from tests.http_status import http_status
from tests.vm.demo_build import Demo
from tests.vm.firstboot_inputs import new_key, ovf_env_xml
from tests.vm.guest_ssh import GUEST_PATH, ssh
from tests.vm.qemu_harness import VM

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

READY_TIMEOUT_S = 900
POWEROFF_TIMEOUT_S = 180
HASH = "$6$firstboot$" + "x1Y2z3" * 14 + "ab"  # the shape of a SHA-512 crypt hash
FAASD_PASSWORD = "seeded-Gateway-pw-42"
NETWORK_V2 = """version: 2
ethernets:
  eth0:
    addresses: [10.0.2.15/25]
    gateway4: 10.0.2.2
    nameservers:
      addresses: [10.0.2.3]
"""


def seed(folder: Path, meta: str, user: str, network: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta-data").write_text(meta)
    (folder / "user-data").write_text(user)
    if network:
        (folder / "network-config").write_text(network)
    return seed_iso.write_iso(seed_iso.nocloud_layout(folder), folder.with_suffix(".iso"))


def ovf_env(folder: Path, hostname: str, public_key: str) -> Path:
    folder.mkdir(parents=True)
    env = folder / "ovf-env.xml"
    env.write_text(ovf_env_xml(hostname, public_key))
    return seed_iso.write_iso(seed_iso.ovf_env_layout(env), folder.with_suffix(".iso"))






@dataclass
class Boot:
    serial: str
    probe: subprocess.CompletedProcess | None = None
    statuses: tuple[int, ...] = ()

    def firstboot(self) -> list[str]:
        return re.findall(r"^APPLIANCE-FIRSTBOOT: (.*?)\r?$", self.serial, re.M)


def boot(overlay: Path, cd: Path, work: Path, name: str, key: Path, probe: str,
         gateway: bool = False) -> Boot:
    ssh_port, http_port = free_port(), free_port()
    with VM(work, disks=[overlay], cdrom=cd, memory_mb=2048, name=name,
            hostfwd=[(ssh_port, 22), (http_port, 8080)]) as vm:
        vm.wait_for(r"^APPLIANCE-(READY|NOT-READY.*)\r?$", READY_TIMEOUT_S)
        result = ssh(key, ssh_port, GUEST_PATH + probe)
        statuses = ()
        if gateway:
            url = f"http://127.0.0.1:{http_port}/system/functions"
            statuses = (http_status(url), http_status(url, "admin:wrong"),
                        http_status(url, f"admin:{FAASD_PASSWORD}"))
        vm.hmp("system_powerdown")  # the ACPI button: the appliance stops and powers off
        assert vm.wait_stopped(POWEROFF_TIMEOUT_S), "no power-off after the ACPI button\n" + vm.tail()
        return Boot(vm.serial_text(), result, statuses)


PROBE = "; echo --; ".join([
    "hostname", "ifconfig eth0", "cat /etc/resolv.conf",
    "sudo grep '^tc:' /etc/shadow | cut -d: -f2",
    "sudo ls -l /var/lib/faasd/secrets/basic-auth-password",
    "cat /var/log/appliance-boot.log",
])


@pytest.fixture(scope="module")
def copy(traditional: Demo, tmp_path_factory) -> dict[str, Boot]:
    """One imported copy of the qcow2, booted three times (see the module's docstring)."""
    work = tmp_path_factory.mktemp("firstboot-image")
    overlay = work / "copy.qcow2"
    image = traditional.out / f"{traditional.qcow2().stem}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(overlay)], check=True)
    key1, public1 = new_key(work, "user_key")
    key2, public2 = new_key(work, "ovf_key")
    first = seed(work / "seed-one", "instance-id: iid-one\nlocal-hostname: copy-one\n",
                 f"""#cloud-config
ssh_authorized_keys:
  - {public1}
users:
  - name: tc
    passwd: "{HASH}"
faasd_password: {FAASD_PASSWORD}
""", NETWORK_V2)
    malformed = seed(work / "seed-two", "instance-id: iid-two\nlocal-hostname: copy-two\n",
                     '#cloud-config\nhostname: "never closed\nssh_authorized_keys:\n  - x\n')
    boots = {"seed": boot(overlay, first, work, "seed", key1, PROBE, gateway=True)}
    boots["malformed"] = boot(overlay, malformed, work, "malformed", key1, "hostname")
    boots["ovf"] = boot(overlay, ovf_env(work / "ovf", "copy-ovf", public2), work, "ovf",
                        key2, "hostname")
    return boots


def test_a_seed_sets_hostname_key_password_network_and_faasd_password(copy):
    first = copy["seed"]
    assert first.firstboot() == [
        "applied nocloud iid-one hostname,ssh_authorized_keys,password,network,faasd_password"]
    assert "APPLIANCE-READY" in first.serial
    assert first.probe.returncode == 0, first.probe.stderr  # logged in with the seed's key
    host, ifconfig, resolv, shadow, secret, log = first.probe.stdout.split("--\n")
    assert host.strip() == "copy-one"
    assert "inet addr:10.0.2.15" in ifconfig and "Mask:255.255.255.128" in ifconfig, ifconfig
    assert "nameserver 10.0.2.3" in resolv
    assert shadow.strip() == HASH
    assert secret.split()[0] == "-rw-------", secret
    # faasd's gateway: the seed's password, not a generated one
    assert first.statuses == (401, 401, 200)
    for secret_text in (HASH, FAASD_PASSWORD):
        assert secret_text not in first.serial and secret_text not in log


def test_a_new_instance_with_malformed_user_data_is_one_error_and_still_ready(copy):
    lines = copy["malformed"].firstboot()
    errors = [line for line in lines if line.startswith("ERROR ")]
    assert len(errors) == 1 and "user-data" in errors[0], lines
    assert any(line.startswith("applied nocloud iid-two hostname") for line in lines), lines
    assert "APPLIANCE-READY" in copy["malformed"].serial
    assert copy["malformed"].probe.stdout.strip() == "copy-two"  # the first seed's key still works


def test_an_ovf_environment_sets_hostname_and_key(copy):
    ovf = copy["ovf"]
    lines = ovf.firstboot()
    assert len(lines) == 1 and re.fullmatch(
        r"applied ovf [0-9a-f]+ hostname,ssh_authorized_keys", lines[0]), lines
    assert ovf.probe.returncode == 0, ovf.probe.stderr  # the OVF environment's key
    assert ovf.probe.stdout.strip() == "copy-ovf"
    assert "APPLIANCE-READY" in ovf.serial
