"""iso-remaster/ovf-env.awk, run by busybox awk, against OVF environment documents (DMTF
DSP0243 section 11): the properties are those an XML parser (ElementTree) reads, whatever
the namespace prefix, the attribute order or the entities."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from appliance.stages.remaster.stage import TEMPLATES
from tests.unit.test_firstboot_yaml import unescape

AWK = TEMPLATES / "ovf-env.awk"
ENV_NS = "http://schemas.dmtf.org/ovf/environment/1"

# The shape VMware (vSphere, ovftool's iso transport) writes.
VMWARE = """<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-1042">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>7.0.3</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
         <Property oe:key="dns" oe:value="10.0.0.1, 8.8.8.8"/>
         <Property oe:key="faasd_password" oe:value="p&amp;ss &quot;w&quot; &lt;3&gt; &apos;x&apos;"/>
         <Property oe:key="gateway" oe:value="10.0.0.1"/>
         <Property oe:key="hostname" oe:value="edge-01"/>
         <Property oe:key="ip" oe:value="10.0.0.5/24"/>
         <Property oe:key="netmask" oe:value=""/>
         <Property oe:key="password_hash" oe:value="$6$salt$abc/def."/>
         <Property oe:key="ssh_public_key" oe:value="ssh-ed25519 AAAAC3Nza alice@laptop"/>
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:9c:12:34" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>
"""

OTHER_PREFIX = """<?xml version="1.0"?>
<ovfenv:Environment xmlns:ovfenv="http://schemas.dmtf.org/ovf/environment/1" ovfenv:id="vm1">
  <ovfenv:PropertySection>
    <ovfenv:Property ovfenv:value='single "quoted"' ovfenv:key='hostname' />
    <ovfenv:Property
        ovfenv:key="ssh_public_key"
        ovfenv:value="ssh-rsa AAAAB3 bob@host"></ovfenv:Property>
    <!-- <ovfenv:Property ovfenv:key="hidden" ovfenv:value="commented out"/> -->
    <ovfenv:Property ovfenv:key="numeric" ovfenv:value="&#65;&#x42;&#233;&#x20AC;"/>
  </ovfenv:PropertySection>
</ovfenv:Environment>
"""

NO_PREFIX = """<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1">
<PropertySection><Property key="hostname" value="plain"/><Property value="a&#10;b	c" key="multi"/></PropertySection>
</Environment>
"""


def run(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["busybox", "awk", "-f", str(AWK)], input=text.encode(),
                          capture_output=True, check=False)


def properties(text: str) -> dict[str, str]:
    proc = run(text)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stdout
    pairs = [line.split("\t") for line in proc.stdout.decode().splitlines()]
    assert all(len(p) == 2 for p in pairs)
    return {unescape(k): unescape(v) for k, v in pairs}


def by_elementtree(text: str) -> dict[str, str]:
    root = ET.fromstring(text.encode())
    found = {}
    for prop in root.iter(f"{{{ENV_NS}}}Property"):
        attrs = {name.rsplit("}", 1)[-1]: value for name, value in prop.attrib.items()}
        found[attrs["key"]] = attrs.get("value", "")
    return found


@pytest.mark.parametrize("text", [VMWARE, OTHER_PREFIX, NO_PREFIX],
                         ids=["vmware-oe", "other-prefix", "no-prefix"])
def test_properties_are_what_an_xml_parser_reads(text):
    assert properties(text) == by_elementtree(text)


def test_vmware_environment_values():
    props = properties(VMWARE)
    assert props["faasd_password"] == "p&ss \"w\" <3> 'x'"
    assert props["netmask"] == ""
    assert props["ip"] == "10.0.0.5/24"
    assert list(props) == ["dns", "faasd_password", "gateway", "hostname", "ip", "netmask",
                           "password_hash", "ssh_public_key"]


def test_character_references_become_utf8():
    assert properties(OTHER_PREFIX)["numeric"] == "AB\u00e9\u20ac"


def test_comments_and_look_alike_elements_are_not_properties():
    props = properties(OTHER_PREFIX)
    assert "hidden" not in props and props["hostname"] == 'single "quoted"'


def test_literal_line_ends_in_a_value_are_blanks_but_references_are_kept():
    assert properties(NO_PREFIX)["multi"] == "a\nb c"


def test_no_properties_is_no_output():
    assert properties('<Environment xmlns="x"><PlatformSection/></Environment>') == {}


BAD = [
    ("not an environment", "<Envelope><Property key='a' value='b'/></Envelope>", "no Environment"),
    ("bare ampersand", '<Environment><Property key="a" value="x & y"/></Environment>', "a bare &"),
    ("unknown entity", '<Environment><Property key="a" value="&nbsp;"/></Environment>',
     "unknown entity &nbsp;"),
    ("no key", '<Environment><Property value="v"/></Environment>', "without a key"),
    ("unquoted", "<Environment><Property key=a value=b/></Environment>", "without quotes"),
    ("unterminated value", '<Environment><Property key="a" value="b/></Environment>',
     "unterminated attribute"),
    ("twice", '<Environment><Property key="a" value="1"/><Property key="a" value="2"/>'
     "</Environment>", "property a is given twice"),
    ("unterminated comment", '<Environment><!-- <Property key="a" value="1"/></Environment>',
     "an unterminated comment"),
]


@pytest.mark.parametrize("name,text,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_documents_are_one_error(name, text, message):
    proc = run(text)
    assert proc.returncode == 1
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("!error\t")
    assert message in lines[0]
