"""kernel/options.toml against the real tc11 config, and the pure .config functions."""

from __future__ import annotations

import pytest

from tests.standin import kernel_options
from tests.standin.kernel import cache_key
from tests.standin.kernelconfig import (
    ConfigFormatError,
    parse_config,
    parse_options,
    scripts_config_argv,
    standin_settings,
    symbol_6_1,
    tc11_mismatches,
    tc11_value_6_1,
    value_of,
    verify_settings,
)


@pytest.fixture(scope="module")
def options():
    return kernel_options.load_options()


@pytest.fixture(scope="module")
def tc11():
    return kernel_options.load_tc11_config()


def test_every_option_has_exactly_its_tc11_value(options, tc11):
    assert tc11_mismatches(options, tc11) == []


def test_tc11_lacks_overlayfs_and_memcg(options, tc11):
    by_name = options.by_name()
    for name in ("OVERLAY_FS", "MEMCG", "CFS_BANDWIDTH", "DEVTMPFS", "IKCONFIG"):
        assert value_of(tc11, name) == "n"
        assert by_name[name].tc11 == "n"
    assert by_name["OVERLAY_FS"].level == "required"


def test_the_list_covers_what_the_design_names(options):
    names = set(options.by_name())
    for name in (
        "NAMESPACES",
        "CGROUPS",
        "SECCOMP",
        "BRIDGE",
        "BRIDGE_NETFILTER",
        "VETH",
        "NF_NAT",
        "NF_CONNTRACK",
        "IP_NF_IPTABLES",
        "IP_NF_FILTER",
        "IP_NF_NAT",
        "IP_NF_TARGET_MASQUERADE",
        "NETFILTER_XT_MATCH_ADDRTYPE",
        "ATA_PIIX",
        "SATA_AHCI",
        "BLK_DEV_SD",
        "BLK_DEV_SR",
        "ISO9660_FS",
        "EXT4_FS",
        "SQUASHFS",
        "BLK_DEV_LOOP",
        "TMPFS",
        "E1000",
        "VIRTIO_PCI",
        "VIRTIO_BLK",
        "VIRTIO_NET",
        "SCSI_VIRTIO",
        "SERIAL_8250_CONSOLE",
    ):
        assert name in names


def test_module_extensions_follow_tiny_core_s_sorter(options):
    by_name = options.by_name()
    for name in ("BRIDGE", "BRIDGE_NETFILTER"):
        assert by_name[name].ships_in == "net-bridging-KERNEL.tcz"
    for name in ("NF_NAT", "NF_CONNTRACK", "NETFILTER_XT_MATCH_CONNTRACK", "IPV6"):
        assert by_name[name].ships_in == "ipv6-netfilter-KERNEL.tcz"
    for name in ("E1000", "VIRTIO_NET", "BLK_DEV_LOOP", "SQUASHFS", "VETH", "STP", "LLC"):
        assert by_name[name].ships_in == "corepure64.gz"


def test_renamed_option_maps_to_its_6_1_symbol(options):
    compress = options.by_name()["MODULE_COMPRESS"]
    assert (symbol_6_1(compress), tc11_value_6_1(compress)) == ("MODULE_COMPRESS_NONE", "y")
    assert {r.name for r in options.retired} >= {"NF_NAT_IPV4"}


def test_parse_config_values():
    text = (
        "#\n# Automatically generated file; DO NOT EDIT.\n#\n"
        "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n"
        'CONFIG_LOCALVERSION="-tinycore64"\nCONFIG_HZ=300\n\n'
    )
    config = parse_config(text)
    assert config == {"A": "y", "B": "m", "C": "n", "LOCALVERSION": '"-tinycore64"', "HZ": "300"}
    assert value_of(config, "ABSENT") == "n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[section]\nkey = 1\n", "x.txt:1: not a kernel config line: '[section]'"),
        ("# only comments\n", "x.txt: no CONFIG_ lines: not a kernel config"),
        ("CONFIG_A=y\nHZ=300\n", "x.txt:2: not a kernel config line: 'HZ=300'"),
    ],
)
def test_parse_config_rejects_what_is_not_a_kernel_config(text, message):
    with pytest.raises(ConfigFormatError) as exc:
        parse_config(text, "x.txt")
    assert str(exc.value).startswith(message)


def test_parse_options_lists_every_problem():
    bad = (
        '[[option]]\nname = "CONFIG_X"\ntc11 = "yes"\nlevel = "must"\ncomponent = "boot"\n'
        'breaks = "b"\ncolour = "red"\n'
        '[[option]]\nname = "Y"\ntc11 = "y"\nlevel = "required"\ncomponent = "boot"\n'
        '[[option]]\nname = "Y"\ntc11 = "y"\nlevel = "required"\ncomponent = "boot"\n'
        'breaks = "b"\n'
    )
    with pytest.raises(ConfigFormatError) as exc:
        parse_options(bad, "o.toml")
    message = str(exc.value)
    for part in (
        "unknown key 'colour'",
        "tc11 = 'yes'",
        "level = 'must'",
        "name is written without CONFIG_",
        "missing 'breaks'",
        "Y is listed twice",
    ):
        assert part in message


def test_scripts_config_argv_sets_what_the_data_says():
    argv = scripts_config_argv(
        {"A": "y", "B": "m", "C": "n", "LOCALVERSION": '"-tinycore64"', "HZ": "300"}
    )
    assert argv == [
        "scripts/config",
        "--file",
        ".config",
        "--enable",
        "A",
        "--module",
        "B",
        "--disable",
        "C",
        "--set-str",
        "LOCALVERSION",
        "-tinycore64",
        "--set-val",
        "HZ",
        "300",
    ]


def test_standin_settings_use_6_1_names_and_tc11_values(options):
    extra = kernel_options.load_extra_config()
    settings = standin_settings(options, extra)
    argv = scripts_config_argv(settings)
    for option in options.options:
        flag = {"y": "--enable", "m": "--module", "n": "--disable"}[tc11_value_6_1(option)]
        index = argv.index(symbol_6_1(option))
        assert argv[index - 1] == flag
    assert settings["LOCALVERSION"] == '"-tinycore64"'
    assert settings["OVERLAY_FS"] == settings["MEMCG"] == "n"


def test_extra_config_and_options_never_set_the_same_symbol(options):
    with pytest.raises(ConfigFormatError, match="both set: BRIDGE"):
        standin_settings(options, {"BRIDGE": "y"})


def test_verify_settings_reports_mismatch_missing_dependency_and_unknown_symbol():
    problems = verify_settings(
        {"A": "y", "B": "m", "C": "n", "GONE": "y"},
        final={"A": "m"},
        known={"A", "B", "C"},
    )
    assert problems == [
        "A: wanted y, the final .config has m",
        "B: wanted m, the final .config has n (a dependency is missing)",
        "GONE: not defined by this kernel's Kconfig (renamed or removed?)",
    ]


def test_cache_key_changes_with_every_input():
    base = ("6.1.192-2", ["scripts/config", "--enable", "X"], ["bridge"])
    keys = {cache_key(*base)}
    for i, changed in enumerate(("6.1.193-1", ["scripts/config"], ["bridge", "veth"])):
        args = list(base)
        args[i] = changed
        keys.add(cache_key(*args))
    assert len(keys) == 4
    assert cache_key(*base) == cache_key(*base)
    assert cache_key(*base) == cache_key("6.1.192-2", base[1], ["bridge"])  # order-free modules
