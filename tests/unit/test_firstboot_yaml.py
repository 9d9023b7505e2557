"""iso-remaster/yaml-subset.awk, run by busybox awk (Tiny Core's), against cloud-init-shaped
examples: what it supports gives the values PyYAML gives; what it does not is reported
(`!ignored` for one key, `!error` for the file), never mis-read silently."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from appliance.stages.remaster.stage import TEMPLATES

AWK = TEMPLATES / "yaml-subset.awk"


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 1
            c = {"n": "\n", "t": "\t"}.get(text[i], text[i])
        out.append(c)
        i += 1
    return "".join(out)


def parse(text: str) -> tuple[int, dict[str, tuple[str, str]], dict[str, str], str]:
    """(exit status, {path: (tag, value)}, {ignored key: why}, error) from the awk."""
    proc = subprocess.run(["busybox", "awk", "-f", str(AWK)], input=text.encode(),
                          capture_output=True, check=False)
    assert proc.stderr == b""
    values, ignored, error = {}, {}, ""
    for line in proc.stdout.decode().splitlines():
        fields = line.split("\t")
        if fields[0] == "!error":
            error = fields[1]
        elif fields[0] == "!ignored":
            ignored[fields[1]] = fields[2]
        else:
            path, tag, value = fields
            assert path not in values
            values[path] = (tag, unescape(value))
    return proc.returncode, values, ignored, error


def flatten(node, path: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{path}.{i}" if path else str(i)))
        return out
    return {path: node}


def resolved(tag: str, value: str) -> object:
    """A plain scalar means what YAML's resolver makes of its text (true, 0644, null...);
    quoted and block scalars are strings."""
    if tag == "p":
        return yaml.safe_load(value) if value else None
    return value


def assert_same_as_pyyaml(text: str, ignored_keys: set[str] = frozenset()) -> dict:
    status, values, ignored, error = parse(text)
    assert (status, error) == (0, "")
    assert set(ignored) == set(ignored_keys)
    expected = {p: v for p, v in flatten(yaml.safe_load(text)).items()
                if p.split(".")[0] not in ignored_keys}
    got = {p: resolved(tag, v) for p, (tag, v) in values.items()}
    assert got == expected
    return values


# --- supported: the same values as PyYAML ----------------------------------------------------

SUPPORTED = {
    "meta-data": """\
instance-id: iid-local01
local-hostname: cloudimg
""",
    "meta-data, comments and blank lines": """\
# written by cloud-localds
instance-id: 9e0f3f8c-1d2b-4c5a-9f6e-0a1b2c3d4e5f   # a UUID

local-hostname: "web-01"
""",
    "cloud-config: keys, default user, password hash, faasd": """\
#cloud-config
hostname: appliance-7
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0 alice@laptop
  - "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== bob#2@host"
users:
  - name: tc
    passwd: $6$rounds=4096$saltsalt$Jj1YH0I/0.9o3q/7Tq1n8ci5dF5zNzXyUQKQx9Q0w6zQf7rN3Yc0g2s3Lh9Vb8Qf3yJ6QpT4z1a2b3c4d5e6f7
    ssh_authorized_keys: [ssh-ed25519 AAAAkey3 carol, 'ssh-ed25519 AAAAkey4 dan']
    lock_passwd: false
    sudo: ALL=(ALL) NOPASSWD:ALL
faasd_password: 'it''s "secret" # not a comment'
""",
    "cloud-config: write_files and runcmd": """\
#cloud-config
write_files:
- path: /etc/motd
  permissions: '0644'
  owner: root:root
  content: |
    Welcome.
      Indented line.

    # not a comment: block content
- path: /usr/local/etc/app.conf
  permissions: 0600
  content: |-
    key=value
    other=1
- path: /root/keep
  content: |+
    trailing

- path: /root/empty
  content: ""
runcmd:
  - [touch, /tmp/ran]
  - ["sh", "-c", "echo 'a b' > /tmp/x"]
  -
    - echo
    - two words
  - - ls
    - -l
""",
    "double-quoted escapes and plain scalars": """\
a: "tab\\there\\nnewline \\"quoted\\" back\\\\slash \\/"
b: plain text with 'quotes' and "more"
c: value # a comment
d: ~
e: null
f:
g: yes
h: 42
i: -1
j: 1.5
k: http://example.com/a#frag
l: []
m: '#hash'
""",
    "network-config v1 (Proxmox-shaped)": """\
version: 1
config:
    - type: physical
      name: eth0
      mac_address: 'bc:24:11:5f:9d:01'
      subnets:
      - type: static
        address: '192.168.1.50'
        netmask: '255.255.255.0'
        gateway: '192.168.1.1'
    - type: nameserver
      address:
      - '1.1.1.1'
      - '9.9.9.9'
      search:
      - 'example.com'
""",
    "network-config v1 dhcp": """\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: dhcp
""",
    "network-config v2 in a network: key": """\
network:
  version: 2
  ethernets:
    id0:
      match:
        macaddress: "52:54:00:12:34:56"
      set-name: eth0
      addresses: [10.0.0.5/24]
      gateway4: 10.0.0.1
      routes:
        - to: default
          via: 10.0.0.1
      nameservers:
        search: [lan]
        addresses: [10.0.0.1, 8.8.8.8]
""",
    "network-config v2 dhcp": """\
version: 2
ethernets:
  eth0:
    dhcp4: true
""",
    "a document start marker": """\
---
instance-id: x1
""",
}


@pytest.mark.parametrize("name", SUPPORTED)
def test_supported_examples_read_as_pyyaml_reads_them(name):
    assert_same_as_pyyaml(SUPPORTED[name])


def test_crlf_line_ends_read_as_lf():
    text = SUPPORTED["cloud-config: write_files and runcmd"]
    assert parse(text.replace("\n", "\r\n"))[1] == parse(text)[1]


def test_tags_say_how_a_scalar_was_written():
    values = assert_same_as_pyyaml(SUPPORTED["cloud-config: write_files and runcmd"])
    assert values["write_files.0.permissions"] == ("q", "0644")
    assert values["write_files.1.permissions"] == ("p", "0600")  # YAML reads 384; we see the text
    assert values["write_files.0.content"][0] == "b"
    assert values["write_files.2.content"] == ("b", "trailing\n\n")


def test_a_list_item_mapping_keeps_its_keys_together():
    values = assert_same_as_pyyaml(SUPPORTED["network-config v1 (Proxmox-shaped)"])
    assert values["config.0.subnets.0.gateway"] == ("q", "192.168.1.1")
    assert values["config.1.address.1"] == ("q", "9.9.9.9")


# --- unsupported constructs: that key is ignored, the others read ----------------------------

IGNORED = [
    ("flow mapping", "hostname: a\nusers: [{name: tc}]\nb: 1\n", "users", "flow"),
    ("flow mapping value", "chpasswd: {expire: false}\nhostname: h\n", "chpasswd", "flow mappings"),
    ("anchor", "base: &b x\nhostname: h\n", "base", "anchors"),
    ("alias", "a: x\nb: *a\nc: y\n", "b", "aliases"),  # PyYAML: no such anchor; we never look
    ("folded block", "bootcmd: >\n  echo a\n  echo b\nhostname: h\n", "bootcmd", "folded"),
    ("tag", "n: !!str 42\nhostname: h\n", "n", "tags"),
    ("indentation indicator", "s: |2\n    x\nhostname: h\n", "s", "indentation indicators"),
    ("nested flow list", "a: [[1, 2]]\nhostname: h\n", "a", "nested"),
    ("mapping in a plain scalar", "runcmd:\n  - echo a: b\nhostname: h\n", "runcmd", "quote"),
]


@pytest.mark.parametrize("name,text,key,why", IGNORED, ids=[i[0] for i in IGNORED])
def test_unsupported_constructs_ignore_only_their_key(name, text, key, why):
    status, values, ignored, _ = parse(text)
    assert status == 0 and why in ignored[key] and list(ignored) == [key]
    if name == "alias":
        assert values == {"a": ("p", "x"), "c": ("p", "y")}
    else:
        assert_same_as_pyyaml(text, {key})


def test_an_anchor_and_its_alias_are_both_ignored():
    assert_same_as_pyyaml("a: &x v\nb: *x\nhostname: h\n", {"a", "b"})


def test_a_quoted_key_is_ignored_without_showing_its_line():
    status, values, ignored, _ = parse('hostname: h\n"pass word": hunter2\n')
    assert status == 0 and values == {"hostname": ("p", "h")}
    assert list(ignored) == ["(line 2)"] and "hunter2" not in str(ignored)


# --- malformed or whole-file constructs: one error, nothing else -----------------------------

ERRORS = [
    ("unterminated quote", 'a: 1\nb: 2\nc: "open\n', "line 3: unterminated quote"),
    ("unterminated single quote", "a: 'open\n", "line 1: unterminated quote"),
    ("multi-line quoted", 'a: "one\n  two"\n', "line 1: unterminated quote"),
    ("two documents", "a: 1\n---\nb: 2\n", "line 2: more than one YAML document"),
    ("document end", "a: 1\n...\n", "line 2: a document end marker"),
    ("bad indentation", "a:\n    b: 1\n  c: 2\n", "line 3: bad indentation"),
    ("tab indentation", "a:\n\tb: 1\n", "line 2: a tab in the indentation"),
    ("duplicate key", "a: 1\na: 2\n", "line 2: duplicate key a"),
    ("top-level list", "- a\n- b\n", "line 1: the document must be a mapping"),
    ("multi-line plain scalar", "a: one\n  two\n", "line 2: bad indentation"),
    ("no colon", "a: 1\njust words\n", "line 2: expected `key: value`"),
    ("text after a quote", 'a: "x" y\n', "line 1: text after a closing quote"),
    ("list on the key's line", "a: - x\n", "line 1: a list cannot start"),
    ("item in a mapping", "a:\n  b: 1\n  - c\n", "line 3: a list item where"),
    ("unknown escape", 'a: "\\x41"\n', "line 1: unsupported escape"),
    ("unterminated flow list", "a: [1, 2\n", "line 1: unterminated flow list"),
    ("directive", "%YAML 1.1\na: 1\n", "line 1: YAML directives"),
]


@pytest.mark.parametrize("name,text,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_input_is_one_error_and_no_values(name, text, message):
    status, values, ignored, error = parse(text)
    assert status == 1 and values == {} and ignored == {}
    assert error.startswith(message), error


def test_pyyaml_agrees_the_errors_are_errors_or_beyond_the_subset():
    """Our errors are YAML errors, or YAML we refuse rather than guess at (multi-line
    scalars, more documents, escapes we do not decode, a key given twice, a document that
    is not a mapping of settings)."""
    refused = {"multi-line quoted", "two documents", "document end", "multi-line plain scalar",
               "unknown escape", "directive", "duplicate key", "top-level list"}
    for name, text, _ in ERRORS:
        if name in refused:
            continue
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text)


def test_an_error_never_prints_a_secret_from_the_line():
    status, _, _, error = parse('#cloud-config\npassword: "hunter2\n')
    assert status == 1 and "hunter2" not in error
