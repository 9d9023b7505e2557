"""iso-remaster/firstboot.sh end to end, run by busybox sh (Tiny Core's shell) against a
temporary root: a folder stands for the mounted NoCloud disk or OVF CD (APPLIANCE_SEED_DIR,
APPLIANCE_OVF_DIR); sethostname, ifconfig and route are recorders."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.stages.remaster.stage import TEMPLATES

pytestmark = pytest.mark.tools

SCRIPT = TEMPLATES / "firstboot.sh"
HASH = "$6$saltsalt$" + "Ab1./" * 17 + "Z"  # the shape of a SHA-512 crypt hash
FAASD = "gw-pass w0rd!"
PLAIN = "hunter2-plain"
SECRETS = (HASH, FAASD, PLAIN, "saltsalt")
MAC = "52:54:00:12:34:56"

META = "instance-id: iid-one\nlocal-hostname: meta-host\n"
USER = f"""#cloud-config
hostname: seed-host
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3key1 alice@laptop
users:
  - name: tc
    passwd: "{HASH}"
    ssh_authorized_keys: [ssh-ed25519 AAAAC3key2 bob@host]
    shell: /bin/sh
faasd_password: '{FAASD}'
write_files:
  - path: /etc/motd
    permissions: '0640'
    owner: root:root
    content: |
      Welcome.
  - path: /usr/local/etc/app/app.conf
    content: "a=1"
runcmd:
  - [sh, -c, 'echo ran >> "$RUNCMD_OUT"']
package_update: true
"""
NETWORK = f"""version: 2
ethernets:
  id0:
    match:
      macaddress: "{MAC}"
    addresses: [192.168.7.10/24]
    gateway4: 192.168.7.1
    nameservers:
      addresses: [1.1.1.1, 9.9.9.9]
"""


@dataclass
class Root:
    path: Path

    def __post_init__(self):
        p = self.path
        for d in ("seed", "ovf", "conf", "home", "etc", "bin", "sys/eth0", "sys/eth1", "run"):
            (p / d).mkdir(parents=True, exist_ok=True)
        (p / "sys/eth0/address").write_text("52:54:00:aa:bb:cc\n")
        (p / "sys/eth1/address").write_text(MAC + "\n")
        (p / "etc/shadow").write_text("root:*:18000:0:99999:7:::\ntc:*:18000:0:99999:7:::\n")
        (p / "run/udhcpc.eth1.pid").write_text("999999999\n")  # no such process
        (p / "mounts").write_text("/dev/sda1 / ext4 rw 0 0\n")  # a traditional install
        rec = p / "bin/rec"
        rec.write_text(f'#!/bin/sh\necho "${{0##*/}} $*" >> "{p}/calls"\n')
        rec.chmod(0o755)
        for name in ("sethostname", "ifconfig", "route"):
            (p / "bin" / name).symlink_to(rec)

    def env(self) -> dict[str, str]:
        p = self.path
        return {
            "PATH": "/usr/bin:/bin", "TMPDIR": str(p), "RUNCMD_OUT": str(p / "runcmd.out"),
            "APPLIANCE_CONF": str(p / "conf"), "APPLIANCE_LOG": str(p / "boot.log"),
            "APPLIANCE_CONSOLE": str(p / "console"),
            "APPLIANCE_FIRSTBOOT_STATE": str(p / "var/lib/appliance/firstboot"),
            "APPLIANCE_FIRSTBOOT_LIB": str(TEMPLATES),
            "APPLIANCE_SEED_DIR": str(p / "seed"), "APPLIANCE_OVF_DIR": str(p / "ovf"),
            "APPLIANCE_SHADOW": str(p / "etc/shadow"),
            "APPLIANCE_SETHOSTNAME": str(p / "bin/sethostname"),
            "APPLIANCE_IFCONFIG": str(p / "bin/ifconfig"),
            "APPLIANCE_ROUTE": str(p / "bin/route"),
            "APPLIANCE_TC_HOME": str(p / "home/tc"), "APPLIANCE_TC_OWNER": "1001:50",
            "APPLIANCE_FAASD_SECRETS": str(p / "var/lib/faasd/secrets"),
            "APPLIANCE_ROOT": str(p / "root"), "APPLIANCE_RESOLV": str(p / "etc/resolv.conf"),
            "APPLIANCE_SYS_NET": str(p / "sys"), "APPLIANCE_RUN": str(p / "run"),
            "APPLIANCE_MOUNTS": str(p / "mounts"),
        }

    def seed(self, meta=META, user=USER, network=NETWORK):
        for name, text in (("meta-data", meta), ("user-data", user), ("network-config", network)):
            target = self.path / "seed" / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text)

    def boot(self, shell: tuple[str, ...] = ("busybox", "sh")) -> list[str]:
        """One run (one boot); the console lines it printed."""
        console = self.path / "console"
        console.unlink(missing_ok=True)
        (self.path / "calls").unlink(missing_ok=True)
        proc = subprocess.run([*shell, str(SCRIPT)], env=self.env(), capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
        return console.read_text().splitlines() if console.exists() else []

    def calls(self) -> list[str]:
        calls = self.path / "calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def mode(self, rel: str) -> int:
        return stat.S_IMODE((self.path / rel).stat().st_mode)

    def everything_but_secret_files(self) -> str:
        """Every file the run leaves, except the three that must hold a secret."""
        allowed = {"etc/shadow", "var/lib/faasd/secrets/basic-auth-password",
                   "var/lib/appliance/firstboot/password_hash"}
        text = []
        for f in sorted(self.path.rglob("*")):
            rel = f.relative_to(self.path).as_posix()
            if f.is_file() and not f.is_symlink() and rel not in allowed and \
                    not rel.startswith(("seed/", "ovf/")):
                text.append(f.read_text(errors="replace"))
        return "\n".join(text)


@pytest.fixture
def root(tmp_path):
    return Root(tmp_path)


def test_a_seed_applies_each_setting(root):
    root.seed()
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname,"
                           "ssh_authorized_keys,password,network,faasd_password,write_files,runcmd"]
    # hostname: user-data's wins over meta-data's
    assert "sethostname seed-host" in root.calls()
    # keys: top level and the default user's, tc's, 0600 in a 0700 folder
    assert root.read("home/tc/.ssh/authorized_keys") == (
        "ssh-ed25519 AAAAC3key1 alice@laptop\nssh-ed25519 AAAAC3key2 bob@host\n")
    assert root.mode("home/tc/.ssh") == 0o700 and root.mode("home/tc/.ssh/authorized_keys") == 0o600
    assert (root.path / "home/tc/.ssh/authorized_keys").stat().st_uid == 1001
    # password: tc's shadow field, nobody else's
    assert root.read("etc/shadow") == f"root:*:18000:0:99999:7:::\ntc:{HASH}:18000:0:99999:7:::\n"
    # network: the interface with the seed's MAC, its udhcpc stopped first
    assert root.calls()[1:] == ["ifconfig eth1 192.168.7.10 netmask 255.255.255.0 up",
                                "route add default gw 192.168.7.1"]
    assert root.read("etc/resolv.conf") == "nameserver 1.1.1.1\nnameserver 9.9.9.9\n"
    # faasd: the value itself, no newline, 0600 in 0700, user admin
    secrets = "var/lib/faasd/secrets"
    assert root.read(f"{secrets}/basic-auth-password") == FAASD
    assert root.read(f"{secrets}/basic-auth-user") == "admin"
    assert root.mode(secrets) == 0o700 and root.mode(f"{secrets}/basic-auth-password") == 0o600
    # write_files: content, mode, new folders 0755
    assert root.read("root/etc/motd") == "Welcome.\n" and root.mode("root/etc/motd") == 0o640
    assert root.read("root/usr/local/etc/app/app.conf") == "a=1"
    assert root.mode("root/usr/local/etc/app/app.conf") == 0o644
    assert root.mode("root/usr/local/etc/app") == 0o755
    # runcmd: once
    assert root.read("runcmd.out") == "ran\n"
    assert root.mode("var/lib/appliance/firstboot") == 0o700
    log = root.read("boot.log")
    assert "top level: package_update is not supported; ignored" in log
    assert "users.0: shell is not supported; ignored" in log


def test_the_same_instance_is_unchanged_but_hostname_and_network_come_back(root):
    root.seed()
    root.boot()
    (root.path / "home/tc/.ssh/authorized_keys").write_text("ssh-ed25519 AAAAmine me\n")
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: unchanged nocloud iid-one"]
    assert root.calls() == ["sethostname seed-host",
                            "ifconfig eth1 192.168.7.10 netmask 255.255.255.0 up",
                            "route add default gw 192.168.7.1"]
    assert root.read("runcmd.out") == "ran\n"  # not run again
    assert root.read("home/tc/.ssh/authorized_keys") == "ssh-ed25519 AAAAmine me\n"


def test_without_the_seed_the_saved_runtime_state_still_applies(root):
    root.seed()
    root.boot()
    shutil.rmtree(root.path / "seed")
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: none"]
    assert root.calls()[0] == "sethostname seed-host" and len(root.calls()) == 3


def test_a_new_instance_id_applies_again(root):
    root.seed()
    root.boot()
    root.seed(meta="instance-id: iid-two\n", user="#cloud-config\nruncmd:\n  - [sh, -c, "
              "'echo two >> \"$RUNCMD_OUT\"']\n", network=None)
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: applied nocloud iid-two runcmd"]
    assert root.read("runcmd.out") == "ran\ntwo\n"
    assert root.calls() == []  # the old instance's host name and network do not carry over


def test_malformed_user_data_is_one_error_and_meta_data_still_applies(root):
    bad = USER.replace("faasd_password: '", "faasd_password: \"")
    root.seed(user=bad, network=None)
    line = 1 + bad.splitlines().index(next(x for x in bad.splitlines() if "faasd" in x))
    assert root.boot() == [
        f"APPLIANCE-FIRSTBOOT: ERROR user-data line {line}: unterminated quote",
        "APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname"]
    assert root.calls() == ["sethostname meta-host"]
    assert not (root.path / "home/tc/.ssh").exists()
    assert "tc:*:" in root.read("etc/shadow")
    assert not (root.path / "runcmd.out").exists()
    assert FAASD not in root.everything_but_secret_files()


def test_a_plain_text_password_is_refused_and_never_written_anywhere(root):
    root.seed(user=f"#cloud-config\npassword: {PLAIN}\nhostname: h1\n", network=None)
    assert root.boot() == [
        "APPLIANCE-FIRSTBOOT: ERROR user-data: password: not a SHA-512 crypt hash ($6$...); "
        "plain text is refused",
        "APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname"]
    assert "tc:*:" in root.read("etc/shadow")
    assert PLAIN not in root.everything_but_secret_files() + root.read("etc/shadow")


def test_secrets_are_in_no_log_console_state_or_command_line(root):
    """strace sees every program's argv: with dash every command is exec'd through PATH, as
    Tiny Core's ash does (its busybox does not prefer applets)."""
    if shutil.which("strace") is None or shutil.which("dash") is None:
        pytest.fail("strace and dash are needed (Makefile TEST_PACKAGES)")
    root.seed()
    trace = root.path.parent / "execve.trace"
    lines = root.boot(("strace", "-f", "-qq", "-e", "trace=execve", "-s", "65535",
                       "-o", str(trace), "dash"))
    assert lines[0].startswith("APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname,")
    argv = trace.read_text()
    assert argv.count("execve(") > 50
    leaks = [s for s in SECRETS if s in argv]
    assert leaks == []
    files = root.everything_but_secret_files()
    assert [s for s in SECRETS if s in files] == []
    assert root.read("etc/shadow").count(HASH) == 1


OVF_ENV = """<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="">
   <PropertySection>
         <Property oe:key="hostname" oe:value="ovf-host"/>
         <Property oe:key="ssh_public_key" oe:value="ssh-ed25519 AAAAovf carol@vc"/>
         <Property oe:key="password_hash" oe:value=""/>
         <Property oe:key="ip" oe:value=""/>
         <Property oe:key="dns" oe:value=""/>
         <Property oe:key="faasd_password" oe:value="VALUE"/>
         <Property oe:key="vm.extra" oe:value="x"/>
   </PropertySection>
</Environment>
"""


def test_an_ovf_environment_applies_hostname_and_key(root):
    (root.path / "ovf/ovf-env.xml").write_text(OVF_ENV.replace("VALUE", "f&amp;x"))
    lines = root.boot()
    assert len(lines) == 1
    match = re.fullmatch(r"APPLIANCE-FIRSTBOOT: applied ovf ([0-9a-f]{16}) "
                         r"hostname,ssh_authorized_keys,faasd_password", lines[0])
    assert match
    assert root.calls() == ["sethostname ovf-host"]  # no ip: DHCP as today
    assert root.read("home/tc/.ssh/authorized_keys") == "ssh-ed25519 AAAAovf carol@vc\n"
    assert root.read("var/lib/faasd/secrets/basic-auth-password") == "f&x"
    assert "ovf: property vm.extra is not supported; ignored" in root.read("boot.log")
    assert root.boot() == [f"APPLIANCE-FIRSTBOOT: unchanged ovf {match[1]}"]
    # the id is salted per machine: it says nothing about the secret values
    (root.path / "var/lib/appliance/firstboot/salt").write_text("another machine\n")
    assert root.boot()[0].startswith("APPLIANCE-FIRSTBOOT: applied ovf ")


def test_an_ovf_static_address(root):
    env = (OVF_ENV.replace('"ip" oe:value=""', '"ip" oe:value="10.1.2.3"')
           .replace('"dns" oe:value=""', '"dns" oe:value="10.1.2.1,8.8.8.8"')
           .replace('oe:key="vm.extra"', 'oe:key="netmask" oe:value="255.255.0.0"/><Property '
                    'oe:key="gateway" oe:value="10.1.2.1"/><Property oe:key="x"'))
    (root.path / "ovf/ovf-env.xml").write_text(env)
    assert "network" in root.boot()[0]
    assert root.calls()[1:] == ["ifconfig eth0 10.1.2.3 netmask 255.255.0.0 up",
                                "route add default gw 10.1.2.1"]
    assert root.read("etc/resolv.conf") == "nameserver 10.1.2.1\nnameserver 8.8.8.8\n"


def test_a_malformed_ovf_environment_is_one_error(root):
    (root.path / "ovf/ovf-env.xml").write_text(OVF_ENV.replace("VALUE", "a & b"))
    assert root.boot() == [
        "APPLIANCE-FIRSTBOOT: ERROR ovf-env.xml: a bare & in an attribute value (write &amp;)",
        "APPLIANCE-FIRSTBOOT: none"]


@pytest.mark.parametrize("sources,expected", [
    (None, "applied nocloud"), ("nocloud\novf\n", "applied nocloud"),
    ("ovf\nnocloud\n", "applied ovf"), ("ovf\n", "applied ovf"), ("nocloud\n", "applied nocloud"),
    ("", "off"), ("\n  \n", "off"),
])
def test_the_sources_file_gives_the_order_or_off(root, sources, expected):
    root.seed()
    (root.path / "ovf/ovf-env.xml").write_text(OVF_ENV)
    if sources is not None:
        (root.path / "conf/firstboot_sources").write_text(sources)
    lines = root.boot()
    assert len(lines) == 1 and lines[0].startswith(f"APPLIANCE-FIRSTBOOT: {expected}")
    if expected == "off":
        assert root.calls() == [] and not (root.path / "var/lib/appliance").exists()


def test_nothing_found_is_none(root):
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: none"]


def test_a_seed_is_found_by_its_label(root):
    """Without APPLIANCE_SEED_DIR: blkid names the cidata device (any case of the label),
    it is mounted read-only, copied and unmounted."""
    seed = root.path / "seed"
    root.seed()
    image = root.path / "cidata.img"  # stands for /dev/sr1: the script takes files too
    image.write_text("")
    blkid = root.path / "bin/blkid"
    # util-linux blkid -o export: NAME=VALUE lines, a blank line after each device
    blkid.write_text('#!/bin/sh\necho "blkid $*" >> "$TOOLS_LOG"\n'
                     'printf "DEVNAME=/dev/sda1\\nUUID=x\\nTYPE=ext4\\n\\n"\n'
                     f'printf "DEVNAME={image}\\nLABEL=CIDATA\\nTYPE=vfat\\n"\n')
    mount = root.path / "bin/mount"
    mount.write_text('#!/bin/sh\necho "mount $*" >> "$TOOLS_LOG"\n'
                     f'[ "$1 $2" = "-r {image}" ] && cp -r "{seed}/." "$3"\n')
    umount = root.path / "bin/umount"
    umount.write_text('#!/bin/sh\necho "umount" >> "$TOOLS_LOG"\nrm -rf "$1"/*\n')
    for f in (blkid, mount, umount):
        f.chmod(0o755)
    env = root.env() | {"APPLIANCE_SEED_DIR": "", "APPLIANCE_BLKID": str(blkid),
                        "APPLIANCE_MOUNT": str(mount), "APPLIANCE_UMOUNT": str(umount),
                        "APPLIANCE_CDROMS": "", "TOOLS_LOG": str(root.path / "tools.log")}
    proc = subprocess.run(["busybox", "sh", str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert root.read("console").splitlines()[0].startswith(
        "APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname,")
    tools = root.read("tools.log").splitlines()
    # one probe of the devices serves every question (each probe reads every device)
    assert tools[0] == "blkid -c /dev/null -o export"
    assert tools[1].startswith(f"mount -r {image} ") and tools[2] == "umount"
    assert [t for t in tools if t.startswith("blkid")] == [tools[0]]
    assert not list(root.path.glob("firstboot.*"))  # its work folder is gone


NETWORK_V1 = """version: 1
config:
    - type: physical
      name: eth0
      mac_address: '52:54:00:12:34:56'
      subnets:
      - type: static
        address: '10.9.8.7'
        netmask: '255.255.254.0'
        gateway: '10.9.8.1'
    - type: nameserver
      address:
      - '10.9.8.2'
"""


@pytest.mark.parametrize("network,calls,resolv", [
    (NETWORK_V1, ["ifconfig eth1 10.9.8.7 netmask 255.255.254.0 up",
                  "route add default gw 10.9.8.1"], "nameserver 10.9.8.2\n"),
    ("network:\n  version: 1\n  config:\n  - type: physical\n    name: eth0\n"
     "    subnets:\n    - type: dhcp\n", [], None),
    ("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n", [], None),
    # a prefix that is not a multiple of 8 (busybox awk may have no ^), the id as the name
    ("version: 2\nethernets:\n  eth1:\n    addresses: [10.0.2.15/25]\n    gateway4: 10.0.2.2\n"
     "    nameservers:\n      addresses: [10.0.2.3]\n",
     ["ifconfig eth1 10.0.2.15 netmask 255.255.255.128 up", "route add default gw 10.0.2.2"],
     "nameserver 10.0.2.3\n"),
], ids=["v1-static-by-mac", "v1-dhcp", "v2-dhcp", "v2-static-prefix-25"])
def test_network_config_versions(root, network, calls, resolv):
    root.seed(user=None, network=network)
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname,network"]
    assert root.calls() == ["sethostname meta-host", *calls]
    assert (root.read("etc/resolv.conf") if resolv else None) == resolv


@pytest.mark.parametrize("network,error", [
    ("version: 2\nethernets:\n  eth0:\n    addresses: ['2001:db8::5/64']\n",
     "network-config: only IPv4 is supported (address 2001:db8::5/64)"),
    ("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.5]\n",
     "network-config: address 10.0.0.5 has neither a /prefix nor a netmask"),
    ("version: 3\n", 'network-config: version "3" is not supported (1 or 2)'),
    ("version: 1\nconfig:\n  - type: physical\n    subnets:\n      - type: ipv6_slaac\n",
     'network-config: subnet type "ipv6_slaac" is not supported (static or dhcp)'),
])
def test_a_network_that_does_not_check_out_is_not_applied(root, network, error):
    root.seed(user=None, network=network)
    assert root.boot() == [f"APPLIANCE-FIRSTBOOT: ERROR {error}",
                           "APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname"]
    assert root.calls() == ["sethostname meta-host"]


def test_a_bad_write_files_entry_writes_none_of_them(root):
    user = USER.replace("path: /usr/local/etc/app/app.conf", "path: relative/app.conf")
    root.seed(user=user, network=None)
    lines = root.boot()
    assert lines[0] == "APPLIANCE-FIRSTBOOT: ERROR user-data: write_files[1].path must be absolute"
    assert "write_files" not in lines[1] and "runcmd" in lines[1]
    assert not (root.path / "root/etc/motd").exists()


def test_runcmd_strings_for_a_shell_are_refused(root):
    root.seed(user="#cloud-config\nruncmd:\n  - [touch, /tmp/x]\n  - echo hi > /tmp/y\n",
              network=None)
    assert root.boot() == [
        "APPLIANCE-FIRSTBOOT: ERROR user-data: runcmd[1] is not an argv list ([cmd, arg, ...]); "
        "runcmd refused",
        "APPLIANCE-FIRSTBOOT: applied nocloud iid-one hostname"]


def test_keys_are_never_written_through_a_link(root):
    root.seed(network=None)
    (root.path / "home/tc/.ssh").mkdir(parents=True)
    (root.path / "home/tc/.ssh/authorized_keys").symlink_to(root.path / "etc/shadow")
    lines = root.boot()
    assert lines[0].startswith("APPLIANCE-FIRSTBOOT: ERROR ssh_authorized_keys: ")
    assert "ssh_authorized_keys" not in lines[1]
    assert "ssh-ed25519" not in root.read("etc/shadow")


def test_write_files_append_keeps_what_was_there(root):
    (root.path / "root/etc").mkdir(parents=True)
    (root.path / "root/etc/motd").write_text("first\n")
    root.seed(user="#cloud-config\nwrite_files:\n  - path: /etc/motd\n    append: true\n"
                   "    content: |\n      second\n", network=None)
    root.boot()
    assert root.read("root/etc/motd") == "first\nsecond\n"


@pytest.mark.parametrize("root_fs,restored", [("tmpfs", True), ("rootfs", True), ("ext4", False)])
def test_keys_and_password_come_back_where_the_root_forgets_them(root, root_fs, restored):
    """Frugal (/ a tmpfs) and live (the initramfs): tc-config makes tc and its home afresh
    at every boot and bootsync.sh locks the password; a disk root keeps what was set, and
    what the user changed since."""
    root.seed(network=None)
    (root.path / "mounts").write_text(f"rootfs / {root_fs} rw 0 0\n")
    root.boot()
    (root.path / "etc/shadow").write_text("root:*:1:0:99999:7:::\ntc:*:1:0:99999:7:::\n")
    shutil.rmtree(root.path / "home/tc")
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: unchanged nocloud iid-one"]
    keys = root.path / "home/tc/.ssh/authorized_keys"
    assert keys.exists() is restored
    assert (f"tc:{HASH}:" in root.read("etc/shadow")) is restored
    if restored:
        assert keys.read_text() == ("ssh-ed25519 AAAAC3key1 alice@laptop\n"
                                    "ssh-ed25519 AAAAC3key2 bob@host\n")
        assert root.mode("home/tc/.ssh/authorized_keys") == 0o600


def test_a_seed_with_nothing_to_apply(root):
    root.seed(meta="instance-id: bare\n", user="#!/bin/sh\necho scripts are not run\n",
              network=None)
    assert root.boot() == ["APPLIANCE-FIRSTBOOT: applied nocloud bare -"]
    assert "user-data is a script: not supported; ignored" in root.read("boot.log")


@pytest.mark.parametrize("meta,error", [
    ("local-hostname: h\n", "meta-data: no instance-id"),
    ("instance-id: 'a b'\n", "meta-data: instance-id: only letters, digits and ._:-"),
    ("instance-id: [x\n", "meta-data line 1: unterminated flow list"),
])
def test_an_unusable_meta_data_falls_through_to_the_next_source(root, meta, error):
    root.seed(meta=meta)
    (root.path / "ovf/ovf-env.xml").write_text(OVF_ENV)
    lines = root.boot()
    assert lines[0].startswith(f"APPLIANCE-FIRSTBOOT: ERROR {error}")
    assert lines[1].startswith("APPLIANCE-FIRSTBOOT: applied ovf ") and len(lines) == 2


def run_bootlocal(tmp: Path, firstboot: str) -> tuple[list[str], str]:
    """bootlocal.sh with one service and APPLIANCE_FIRSTBOOT=firstboot; (calls, console)."""
    (tmp / "conf").mkdir()
    (tmp / "conf/services").write_text("svc\n")
    (tmp / "conf/ready_timeout").write_text("30\n")
    (tmp / "init.d").mkdir()
    svc = tmp / "init.d/svc"
    svc.write_text(f'#!/bin/sh\necho "svc $1" >> "{tmp}/calls"\n')
    svc.chmod(0o755)
    (tmp / "mounts").write_text("/dev/sda1 / ext4 rw 0 0\n")
    env = {"PATH": "/usr/bin:/bin", "APPLIANCE_CONF": str(tmp / "conf"), "TMPDIR": str(tmp),
           "APPLIANCE_LOG": str(tmp / "boot.log"), "APPLIANCE_INITD": str(tmp / "init.d"),
           "APPLIANCE_CONSOLE": str(tmp / "console"), "APPLIANCE_MOUNTS": str(tmp / "mounts"),
           "APPLIANCE_FIRSTBOOT": firstboot}
    # bootlocal.sh returns at once; its job runs on: poll for its marker
    subprocess.run(["busybox", "sh", str(TEMPLATES / "bootlocal.sh")], env=env, check=True,
                   timeout=10)
    subprocess.run(["busybox", "sh", "-c", f'i=0; while ! grep -q READY "{tmp}/console" '
                    '2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done'],
                   check=True, timeout=60)
    calls = (tmp / "calls").read_text().splitlines()
    return calls, (tmp / "console").read_text()


def test_bootlocal_runs_firstboot_before_any_service(tmp_path):
    fake = tmp_path / "firstboot"
    fake.write_text(f'#!/bin/sh\necho firstboot >> "{tmp_path}/calls"\n')
    fake.chmod(0o755)
    calls, console = run_bootlocal(tmp_path, str(fake))
    assert calls == ["firstboot", "svc start", "svc status"]
    assert console == "APPLIANCE-READY\n"


@pytest.mark.parametrize("firstboot", ["false", "/nonexistent/firstboot.sh"])
def test_a_failing_or_missing_firstboot_never_fails_the_boot(tmp_path, firstboot):
    calls, console = run_bootlocal(tmp_path, firstboot)
    assert calls == ["svc start", "svc status"] and console == "APPLIANCE-READY\n"
