"""The OVF descriptor's content (what each importer reads) and the .mf manifest lines."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import jinja2
import pytest

from appliance.stages.export import ovf

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "vmw": "http://www.vmware.com/schema/ovf",
}
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
VMW = "{http://www.vmware.com/schema/ovf}"


def descriptor(controller: str = "ide", **disk) -> ovf.Descriptor:
    d = ovf.Disk(**{"href": "tca-1.2.3-disk1.vmdk", "size": 12345, "capacity": 8 << 30,
                    "populated_size": 4096, **disk})
    return ovf.Descriptor("tca", "tca 1.2.3", d, cpus=2, memory_mb=1536, controller=controller)


def parsed(d: ovf.Descriptor) -> ET.Element:
    return ET.fromstring(ovf.render(d).encode())


def items(root: ET.Element) -> dict[str, dict[str, str]]:
    """rasd Items by ResourceType, as {element: text}."""
    result = {}
    for node in root.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", NS):
        fields = {child.tag.split("}")[1]: child.text for child in node}
        result[fields["ResourceType"]] = fields
    return result


def test_sections_come_in_schema_order():
    root = parsed(descriptor())
    assert [child.tag.removeprefix(OVF) for child in root] == [
        "References", "DiskSection", "NetworkSection", "VirtualSystem"]


def test_file_and_disk_carry_the_real_sizes():
    root = parsed(descriptor(size=987654, capacity=123 << 20, populated_size=55 << 16))
    file = root.find("ovf:References/ovf:File", NS)
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert file.get(f"{OVF}href") == "tca-1.2.3-disk1.vmdk"
    assert file.get(f"{OVF}size") == "987654"
    assert disk.get(f"{OVF}fileRef") == file.get(f"{OVF}id")
    assert disk.get(f"{OVF}capacity") == "123"
    assert disk.get(f"{OVF}capacityAllocationUnits") == "byte * 2^20"
    assert disk.get(f"{OVF}populatedSize") == str(55 << 16)
    assert disk.get(f"{OVF}format") == (
        "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")


def test_populated_size_is_left_out_when_unknown():
    disk = parsed(descriptor(populated_size=None)).find("ovf:DiskSection/ovf:Disk", NS)
    assert f"{OVF}populatedSize" not in disk.attrib


@pytest.mark.parametrize("controller, rtype, subtype, family", [
    ("ide", "5", "PIIX4", "vmx-07"),
    ("sata", "20", "vmware.sata.ahci", "vmx-10"),
])
def test_controller_family_and_the_disk_on_it(controller, rtype, subtype, family):
    root = parsed(descriptor(controller))
    found = items(root)
    assert found[rtype]["ResourceSubType"] == subtype
    assert root.find(".//ovf:System/vssd:VirtualSystemType", NS).text == family
    disk = found["17"]
    assert disk["Parent"] == found[rtype]["InstanceID"]
    assert disk["AddressOnParent"] == "0"
    disk_id = root.find("ovf:DiskSection/ovf:Disk", NS).get(f"{OVF}diskId")
    assert disk["HostResource"] == f"ovf:/disk/{disk_id}"
    other = {"5": "20", "20": "5"}[rtype]
    assert other not in found  # only the chosen controller


def test_cpu_memory_nic_firmware_and_os():
    root = parsed(descriptor())
    found = items(root)
    assert (found["3"]["VirtualQuantity"], found["3"]["AllocationUnits"]) == ("2", "hertz * 10^6")
    assert (found["4"]["VirtualQuantity"], found["4"]["AllocationUnits"]) == ("1536",
                                                                              "byte * 2^20")
    nic = found["10"]
    network = root.find("ovf:NetworkSection/ovf:Network", NS).get(f"{OVF}name")
    assert (nic["ResourceSubType"], nic["Connection"]) == ("E1000", network)
    configs = root.findall(".//ovf:VirtualHardwareSection/vmw:Config", NS)
    assert [(c.get(f"{VMW}key"), c.get(f"{VMW}value"), c.get(f"{OVF}required"))
            for c in configs] == [("firmware", "bios", "false")]
    os_section = root.find(".//ovf:OperatingSystemSection", NS)
    assert os_section.get(f"{OVF}id") == "101"
    assert os_section.get(f"{VMW}osType") == "other26xLinux64Guest"


def test_rasd_elements_are_in_alphabetical_order_with_the_required_ones():
    for node in parsed(descriptor("sata")).iterfind(".//ovf:Item", NS):
        names = [child.tag.split("}")[1] for child in node]
        assert names == sorted(names)
        assert {"ElementName", "InstanceID"} <= set(names)


def test_text_is_escaped_for_xml():
    d = descriptor()
    d = ovf.Descriptor(d.name, 'a <b> & "c"', d.disk, d.cpus, d.memory_mb)
    root = parsed(d)
    assert root.find(".//ovf:AnnotationSection/ovf:Annotation", NS).text == 'a <b> & "c"'


def test_a_template_variable_that_is_not_given_is_an_error(tmp_path):
    (tmp_path / ovf.TEMPLATE).write_text("<x>{{ disk.size }}{{ not_given }}</x>")
    with pytest.raises(jinja2.UndefinedError):
        ovf.render(descriptor(), templates=tmp_path)


def test_unknown_controller_is_refused():
    with pytest.raises(ValueError):
        ovf.render(descriptor("scsi"))


# --- .mf ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, label", [("sha256", "SHA256"), ("sha1", "SHA1")])
def test_manifest_lines_have_the_exact_format_and_verify(tmp_path, algorithm, label):
    files = []
    for name, data in (("tca-1.2.3.ovf", b"<Envelope/>"), ("tca-1.2.3-disk1.vmdk", b"x" * 70000)):
        (tmp_path / name).write_bytes(data)
        files.append((name, tmp_path / name))
    lines = ovf.manifest(files, algorithm).splitlines()
    assert len(lines) == 2
    for (name, path), line in zip(files, lines, strict=True):
        match = ovf.MANIFEST_LINE.fullmatch(line)
        assert match, line
        assert match.groups() == (label, name, hashlib.new(algorithm, path.read_bytes())
                                  .hexdigest())


def test_manifest_refuses_sha512(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError):
        ovf.manifest([("f", tmp_path / "f")], "sha512")


def test_item_puts_elements_in_alphabetical_order_whatever_the_call_order():
    assert ovf.item(ResourceType=17, AddressOnParent=0, InstanceID=4) == [
        ("AddressOnParent", "0"), ("InstanceID", "4"), ("ResourceType", "17")]


@pytest.mark.parametrize("capacity, units", [
    (8 << 30, (8, "byte * 2^30")),
    (2048 << 20, (2, "byte * 2^30")),
    (1536 << 20, (1536, "byte * 2^20")),
    (3 << 10, (3, "byte * 2^10")),
    (1000, (1000, "byte * 2^0")),
])
def test_capacity_is_given_in_the_largest_exact_power_of_two_unit(capacity, units):
    """Proxmox reads only `byte * base^exponent`; the product must equal the capacity."""
    disk = ovf.Disk("d.vmdk", 1, capacity)
    assert disk.capacity_units == units
    value, unit = disk.capacity_units
    assert value * 2 ** int(unit.rsplit("^", 1)[1]) == capacity
