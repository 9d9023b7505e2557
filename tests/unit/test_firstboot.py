"""First boot, the host side: the recipe's firstboot.sources, the file the remaster stage
writes from it, and the OVF ProductSection (properties and the ISO transport)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from appliance import config
from appliance.paths import REPO
from appliance.stages.export import ovf
from appliance.stages.remaster import stage as iso_remaster
from appliance.tinycore import initrd
from tests.unit.test_remaster_stage import ctx, problems, recipe_file  # noqa: F401 (fixture)

SOURCES_FILE = "etc/sysconfig/appliance/firstboot_sources"
SCHEMA = REPO / "tests" / "data" / "ovf-schema" / "dsp8023_1.1.1.xsd"
NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"}
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
KEYS = ["hostname", "ssh_public_key", "password_hash", "ip", "netmask", "gateway", "dns",
        "faasd_password"]


# --- recipe: firstboot.sources --------------------------------------------------------------


@pytest.mark.parametrize(("toml", "sources"), [
    ("", ["nocloud", "ovf"]),  # the default: both
    ('[firstboot]\nsources = ["ovf", "nocloud"]\n', ["ovf", "nocloud"]),  # order kept
    ('[firstboot]\nsources = ["nocloud"]\n', ["nocloud"]),
    ("[firstboot]\nsources = []\n", []),  # off
])
def test_good_sources(tmp_path, toml, sources):
    assert config.load([recipe_file(tmp_path, toml)]).recipe.firstboot.sources == sources


@pytest.mark.parametrize(("value", "says"), [
    ('["cloud-init"]', 'unknown source "cloud-init": each entry must be one of nocloud, ovf'),
    ('["ovf", "ovf"]', "listed more than once: ovf (each of nocloud, ovf at most once)"),
    ('"nocloud"', 'must be a list of sources, each one of nocloud, ovf'),
    ("[1]", "unknown source 1: each entry must be one of nocloud, ovf"),
])
def test_bad_sources_are_one_error_naming_the_field_and_the_allowed_values(tmp_path, value,
                                                                           says):
    shown = problems(tmp_path, f"[firstboot]\nsources = {value}\n")
    lines = shown.splitlines()
    assert len(lines) == 1
    assert ": firstboot.sources: " in lines[0] and says in lines[0]


def test_the_default_recipe_names_the_switch():
    assert "[firstboot]" in (REPO / "appliance.toml").read_text()
    assert config.load([REPO / "appliance.toml"]).recipe.firstboot.sources == ["nocloud", "ovf"]


# --- the guest file and the stage key -------------------------------------------------------


@pytest.mark.parametrize(("sources", "content"), [
    (["nocloud", "ovf"], b"nocloud\novf\n"),
    (["ovf", "nocloud"], b"ovf\nnocloud\n"),
    ([], b""),  # always written, empty when off
])
def test_the_sources_file_follows_the_recipe_and_the_key_changes(ctx, sources,  # noqa: F811
                                                                 content):
    ctx.active_stages = ("fetch", "remaster")
    before = iso_remaster.key_slice(ctx.recipe)
    ctx.recipe = ctx.recipe.model_copy(update={"firstboot": config.Firstboot(sources=sources)})
    settings = iso_remaster.inputs_from(ctx).settings
    files = {e.path: e for e in initrd.appliance_files(settings, iso_remaster.TEMPLATES)}
    assert files[SOURCES_FILE].data == content
    assert files[SOURCES_FILE].mode & 0o777 == 0o644
    after = iso_remaster.key_slice(ctx.recipe)
    assert after["firstboot_sources"] == sources
    assert (after != before) == (sources != ["nocloud", "ovf"])  # a change rebuilds the ISO


# --- the OVF: ProductSection and transport --------------------------------------------------


def descriptor(controller: str) -> ovf.Descriptor:
    return ovf.Descriptor("tca", "tca 1.2.3", ovf.Disk("tca-disk1.vmdk", 123, 8 << 30, 99),
                          cpus=1, memory_mb=1024, controller=controller, version="1.2.3")


@pytest.mark.parametrize("controller", ["ide", "sata"])
def test_the_ovf_with_its_product_section_is_schema_valid(tmp_path, controller):
    path = tmp_path / "a.ovf"
    path.write_text(ovf.render(descriptor(controller)), encoding="utf-8")
    # libxml2-utils is in the Makefile's TEST_PACKAGES; the schema is vendored (no network)
    lint = subprocess.run(["xmllint", "--nonet", "--noout", "--schema", str(SCHEMA), str(path)],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stderr


def test_the_schema_check_sees_a_broken_property(tmp_path):
    # a Property without its required ovf:type: the check above would catch such a slip
    text = ovf.render(descriptor("ide")).replace(' ovf:type="string"', "", 1)
    path = tmp_path / "b.ovf"
    path.write_text(text, encoding="utf-8")
    lint = subprocess.run(["xmllint", "--nonet", "--noout", "--schema", str(SCHEMA), str(path)],
                          capture_output=True, text=True, check=False)
    assert lint.returncode != 0 and "type" in lint.stderr


def test_properties_have_the_exact_keys_types_labels_and_masks():
    root = ET.fromstring(ovf.render(descriptor("ide")).encode())
    section = root.find("ovf:VirtualSystem/ovf:ProductSection", NS)
    props = section.findall("ovf:Property", NS)
    assert [p.get(f"{OVF}key") for p in props] == KEYS
    for p in props:
        assert p.get(f"{OVF}type") == "string"
        assert p.get(f"{OVF}userConfigurable") == "true"
        assert p.get(f"{OVF}value") == ""
        assert p.find("ovf:Label", NS).text and p.find("ovf:Description", NS).text
    masked = [p.get(f"{OVF}key") for p in props if p.get(f"{OVF}password") == "true"]
    assert masked == ["password_hash", "faasd_password"]
    assert section.find("ovf:Product", NS).text == "tca"
    assert section.find("ovf:Version", NS).text == "1.2.3"


@pytest.mark.parametrize(("controller", "rtype"), [("ide", "5"), ("sata", "20")])
def test_the_iso_transport_and_a_cd_drive_to_deliver_it(controller, rtype):
    root = ET.fromstring(ovf.render(descriptor(controller)).encode())
    hardware = root.find("ovf:VirtualSystem/ovf:VirtualHardwareSection", NS)
    assert hardware.get(f"{OVF}transport") == "iso"
    items = {}
    for node in hardware.findall("ovf:Item", NS):
        fields = {c.tag.split("}")[1]: c.text for c in node}
        items[fields["ResourceType"]] = (fields, node.get(f"{OVF}required"))
    cd, required = items["15"]
    assert required == "false"  # an importer without a CD drive may skip it
    controller_id = items[rtype][0]["InstanceID"]
    assert cd["Parent"] == controller_id and cd["AddressOnParent"] == "1"
    disk = items["17"][0]
    assert (disk["Parent"], disk["AddressOnParent"]) == (controller_id, "0")  # disk unmoved
    ids = [f[0]["InstanceID"] for f in items.values()]
    assert len(ids) == len(set(ids))
