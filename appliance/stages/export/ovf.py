"""The OVF descriptor and the OVA manifest (.mf) of the appliance.

The hardware is what the tc11 kernel can drive without extra modules (docs/architecture.md#ovf-and-ova):
an IDE (PIIX4) or SATA (AHCI) controller, an E1000 network card, BIOS firmware.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from appliance.paths import RESOURCES

TEMPLATES = RESOURCES
TEMPLATE = "appliance.ovf.j2"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
NETWORK = "VM Network"  # VMware's default port group; VirtualBox maps any name to NAT
DISK_ID = "vmdisk1"
# Only these two: ESXi < 6.5 reads nothing but SHA1, virt-v2v refuses SHA512 lines.
MANIFEST_ALGORITHMS = {"sha256": "SHA256", "sha1": "SHA1"}
MANIFEST_LINE = re.compile(r"^(SHA1|SHA256)\(([^)]+)\)= ([0-9a-f]+)$")


@dataclass(frozen=True)
class Controller:
    resource_type: int
    subtype: str
    family: str  # the oldest VMware hardware family that has this controller
    element: str


CONTROLLERS = {
    "ide": Controller(5, "PIIX4", "vmx-07", "ideController0"),
    # VMware names AHCI vmware.sata.ahci and has it from hardware version 10 on
    "sata": Controller(20, "vmware.sata.ahci", "vmx-10", "sataController0"),
}


@dataclass(frozen=True)
class Property:
    """A ProductSection property: VMware's deploy wizard shows Label and Description and
    writes the value into the OVF environment (ovf-env.xml) that /opt/firstboot.sh reads."""

    key: str
    label: str
    description: str
    password: bool = False  # the wizard masks the field (ovf:password, DSP8023 1.1)


# The keys are an interface with the guest's /opt/firstboot.sh: never rename one.
PROPERTIES = (
    Property("hostname", "Host name", "The appliance's host name (letters, digits and -, "
             "dot-separated labels). Empty: keep the image's."),
    Property("ssh_public_key", "SSH public key", "One OpenSSH public key line for the tc user "
             "(ssh-ed25519 AAAA... comment). Empty: no key is added."),
    Property("password_hash", "tc password hash", "A SHA-512 crypt hash for the tc user "
             "(mkpasswd -m sha-512, openssl passwd -6), never a plain password. Empty: "
             "unchanged.", password=True),
    Property("ip", "IP address", "Static IPv4 address of the first network card (with "
             "netmask and gateway). Empty: the image's default, DHCP."),
    Property("netmask", "Netmask", "Netmask for the static address (255.255.255.0 or 24)."),
    Property("gateway", "Gateway", "Default gateway for the static address."),
    Property("dns", "DNS servers", "Name servers, separated by spaces or commas."),
    Property("faasd_password", "faasd admin password", "Password of faasd's gateway user "
             "admin. Empty: unchanged (faasd generates one on its first start).", password=True),
)
# How the hypervisor hands the properties to the guest: "iso" attaches a CD holding
# ovf-env.xml (DMTF DSP0243 section 11.1, "Transport media"). VMware reads it from
# VirtualHardwareSection/@ovf:transport, as canonical/cloud-init's example
# doc/sources/ovf/example/ubuntu-server.ovf declares it. The other VMware transport,
# com.vmware.guestInfo, needs VMware Tools, which Tiny Core 11 lacks.
TRANSPORT = "iso"


@dataclass(frozen=True)
class OperatingSystem:
    # CIM 101 is "Linux 64-bit"; other26xLinux64Guest is accepted by every ESXi release,
    # newer names (other4xLinux64Guest) are not.
    cim_id: int = 101
    vmware_type: str = "other26xLinux64Guest"
    description: str = "Tiny Core Linux 11 (64-bit)"


@dataclass(frozen=True)
class Disk:
    href: str  # the VMDK's member name in the OVA
    size: int  # bytes of the VMDK file
    capacity: int  # bytes the guest sees (qemu-img info virtual-size)
    populated_size: int | None = None  # bytes of data in it, a hint for thin provisioning

    @property
    def capacity_units(self) -> tuple[int, str]:
        """The capacity in the largest `byte * 2^N` unit that holds it exactly.

        Proxmox's OVF reader (PVE::GuestImport::OVF try_parse_capacity_unit) understands only
        the `byte * base^exponent` form and shows an unknown size for plain `byte`."""
        for exponent in (30, 20, 10):
            if self.capacity % (1 << exponent) == 0:
                return self.capacity >> exponent, f"byte * 2^{exponent}"
        return self.capacity, "byte * 2^0"


@dataclass(frozen=True)
class Descriptor:
    name: str
    annotation: str
    disk: Disk
    cpus: int
    memory_mb: int
    controller: str = "ide"
    os: OperatingSystem = OperatingSystem()
    version: str = ""  # the product version the deploy wizard shows (empty: left out)


def item(**elements: object) -> list[tuple[str, str]]:
    """One rasd Item; the schema wants its elements in alphabetical order."""
    return sorted((k, str(v)) for k, v in elements.items())


def hardware_items(d: Descriptor) -> list[list[tuple[str, str]]]:
    ctl = CONTROLLERS[d.controller]
    return [
        item(AllocationUnits="hertz * 10^6", Description="Number of virtual CPUs",
             ElementName=f"{d.cpus} virtual CPU(s)", InstanceID=1, ResourceType=3,
             VirtualQuantity=d.cpus),
        item(AllocationUnits="byte * 2^20", Description="Memory size",
             ElementName=f"{d.memory_mb} MB of memory", InstanceID=2, ResourceType=4,
             VirtualQuantity=d.memory_mb),
        item(Address=0, Description=f"{d.controller.upper()} controller",
             ElementName=ctl.element, InstanceID=3, ResourceSubType=ctl.subtype,
             ResourceType=ctl.resource_type),
        # Parent is the controller's InstanceID: without it importers guess the bus
        item(AddressOnParent=0, ElementName="disk0", HostResource=f"ovf:/disk/{DISK_ID}",
             InstanceID=4, Parent=3, ResourceType=17),
        item(AutomaticAllocation="true", Connection=NETWORK,
             Description=f"E1000 ethernet adapter on {NETWORK}", ElementName="ethernet0",
             InstanceID=5, ResourceSubType="E1000", ResourceType=10),
    ]


def optional_items(d: Descriptor) -> list[list[tuple[str, str]]]:
    """Items marked ovf:required="false": an importer that cannot make them skips them.

    An empty CD-ROM drive: VMware delivers the ISO transport's ovf-env.xml in a CD drive and
    refuses to deploy vApp properties without one ("this virtual machine requires a client
    CDROM device to deliver vApp properties": vmware/terraform-provider-vsphere#489). It sits
    on the disk's controller as its second device (IDE primary slave, or SATA port 1), so the
    disk keeps address 0 on every hypervisor."""
    return [
        item(AddressOnParent=1, AutomaticAllocation="false", Description="CD-ROM drive for "
             "the OVF environment (ovf-env.xml)", ElementName="cdrom0", InstanceID=6,
             Parent=3, ResourceType=15),
    ]


def environment(templates: Path = TEMPLATES) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
        autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(d: Descriptor, templates: Path = TEMPLATES) -> str:
    if d.controller not in CONTROLLERS:
        raise ValueError(f"unknown disk controller {d.controller!r}")
    return environment(templates).get_template(TEMPLATE).render(
        name=d.name, annotation=d.annotation, disk=d.disk, disk_format=VMDK_FORMAT,
        network=NETWORK, os=d.os, family=CONTROLLERS[d.controller].family,
        items=hardware_items(d), optional_items=optional_items(d),
        properties=PROPERTIES, transport=TRANSPORT, version=d.version,
        # virt-v2v reads exactly this key and accepts only bios or efi
        vmware_config=[("firmware", "bios")])


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def manifest_line(name: str, digest: str, algorithm: str) -> str:
    # Written here, not by `sha256sum --tag` (`SHA256 (x) = `) or OpenSSL 3 (`SHA2-256(x)=`):
    # importers accept only `SHA256(x)= hex`.
    return f"{MANIFEST_ALGORITHMS[algorithm]}({name})= {digest}\n"


def manifest(files: list[tuple[str, Path]], algorithm: str = "sha256") -> str:
    """The .mf text for (member name, file) pairs, in the order given."""
    if algorithm not in MANIFEST_ALGORITHMS:
        raise ValueError(f"manifest digest must be one of {sorted(MANIFEST_ALGORITHMS)}")
    return "".join(manifest_line(name, file_digest(path, algorithm), algorithm)
                   for name, path in files)
