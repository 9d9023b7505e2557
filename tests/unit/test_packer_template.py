"""The Packer files: rendered for Packer 1.6 and >= 1.7, every value escaped, parsed back."""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

from appliance import config
from appliance.errors import StageError
from appliance.paths import REPO
from appliance.stages.packer import hcl
from appliance.stages.packer import stage as packer_stage
from appliance.stages.packer import template as packer_template

TEMPLATES = REPO / "packer"
RECIPE = """
name = "demo"
version = "1.2.3"
services = ["containerd", "faasd"]
[tinycore]
version = "11.1"
mirrors = ["http://127.0.0.1:9/"]
guest_mirror = "http://10.0.2.2:9/"
extensions = ["openssh"]
"""


def recipe(tmp_path: Path, extra: str = "") -> config.Recipe:
    path = tmp_path / "appliance.toml"
    path.write_text(RECIPE + extra)
    return config.load([path]).recipe


def build(tmp_path: Path, accel: str = "tcg", iso_name: str = "appliance.iso") -> packer_template.Build:
    return packer_template.Build(
        iso=tmp_path / iso_name, iso_sha256="ab" * 32, accelerator=accel,
        private_key=tmp_path / "keys" / "build_ed25519",
        extensions=("openssh.tcz", "containerd.tcz", "faasd.tcz"),
        work=tmp_path / "work", serial_log=tmp_path / "logs" / "serial.log")


def rendered(tmp_path: Path, version=(1, 6, 6), accel="tcg", extra="", **kw) -> dict[str, dict]:
    vals = packer_template.values(recipe(tmp_path, extra), build(tmp_path, accel, **kw))
    texts = packer_template.render_texts(TEMPLATES, vals, version)
    return {name: hcl2.loads(text) for name, text in texts.items()}


def variables(parsed: dict) -> dict:
    return parsed[packer_template.VAR_FILE]


def source(parsed: dict) -> dict:
    return parsed[packer_template.TEMPLATE]["source"][0]["qemu"]["appliance"]


def test_packer_1_6_gets_no_required_plugins(tmp_path):
    parsed = rendered(tmp_path, (1, 6, 6))
    assert set(parsed) == {packer_template.TEMPLATE, packer_template.VAR_FILE}
    texts = packer_template.render_texts(
        TEMPLATES, packer_template.values(recipe(tmp_path), build(tmp_path)), (1, 6, 6))
    assert all("required_plugins" not in text for text in texts.values())


@pytest.mark.parametrize("version", [(1, 7, 0), (1, 9, 4), (1, 11, 2)])
def test_packer_1_7_and_later_get_a_plugins_file(tmp_path, version):
    parsed = rendered(tmp_path, version)
    plugins = parsed[packer_template.PLUGINS]["packer"][0]["required_plugins"][0]["qemu"]
    assert plugins == {"source": "github.com/hashicorp/qemu", "version": "~> 1.1"}
    assert "packer" not in parsed[packer_template.TEMPLATE]  # 1.6 would reject it


def test_the_source_is_what_design_section_6_says(tmp_path):
    parsed = rendered(tmp_path)
    src = source(parsed)
    assert src["disk_interface"] == "ide" and src["net_device"] == "e1000"
    assert src["format"] == "qcow2" and src["headless"] is True
    assert src["ssh_username"] == "tc"
    assert src["shutdown_command"] == "sudo /opt/appliance-stop.sh poweroff"
    assert src["qemuargs"][:3] == [["-machine", "type=pc"], ["-accel", "${var.qemu_accel}"],
                                   ["-serial", "file:${var.serial_log}"]]
    vals = variables(parsed)
    assert vals["iso_url"] == (tmp_path / "appliance.iso").as_uri()
    assert vals["iso_checksum"] == "sha256:" + "ab" * 32
    assert vals["boot_command"] == ["<enter>"]
    assert vals["cpus"] == 1 and vals["memory"] == 2048 and vals["disk_size"] == "8192M"
    assert vals["output_directory"] == "output"  # below ${path.root}: see the next test
    assert src["output_directory"] == "${path.root}/${var.output_directory}"


@pytest.mark.parametrize(("top", "extra", "codes"), [
    ("", "", "noautologin"),  # the default: a login prompt on the console
    ("console_autologin = true\n", "", ""),
    ("console_autologin = true\n", '[boot]\ndisk = ["quiet"]\n', "quiet"),
])
def test_the_installed_boot_line_asks_for_a_console_login_unless_switched_off(
        tmp_path, top, extra, codes):
    path = tmp_path / "appliance.toml"
    path.write_text(top + RECIPE + extra)
    vals = packer_template.values(config.load([path]).recipe, build(tmp_path))
    env = dict(item.split("=", 1) for item in vals["install_env"])
    assert env["APPLIANCE_BOOT_CODES"] == codes


def test_packers_ports_listen_on_loopback_only(tmp_path):
    src = source(rendered(tmp_path))
    netdev = [arg for arg in src["qemuargs"] if arg[0] == "-netdev"]
    # Packer fills in the port; id user.0 is the netdev Packer's own -device e1000 uses.
    assert netdev == [["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"]]
    # -device is Packer's
    assert [arg[0] for arg in src["qemuargs"]] == ["-machine", "-accel", "-serial", "-netdev"]
    assert src["vnc_bind_address"] == "127.0.0.1"


def test_every_variable_the_template_uses_is_declared_and_set(tmp_path):
    parsed = rendered(tmp_path)
    declared = {name for block in parsed[packer_template.TEMPLATE]["variable"] for name in block}
    assert declared == set(variables(parsed))
    text = (TEMPLATES / "appliance.pkr.hcl.j2").read_text()
    used = set(re.findall(r"var\.([a-z_]+)", text))
    assert used <= declared


@pytest.mark.parametrize(("accel", "timeout"), [("tcg", "30m"), ("kvm", "10m")])
def test_tcg_gets_a_long_ssh_timeout(tmp_path, accel, timeout):
    vals = variables(rendered(tmp_path, accel=accel))
    assert vals["accelerator"] == accel
    assert vals["ssh_timeout"] == timeout


@pytest.mark.parametrize(("accel", "option"), [("tcg", "tcg,tb-size=64"), ("kvm", "kvm")])
def test_qemu_gets_the_accelerator_with_tcgs_translation_cache_size(tmp_path, accel, option):
    assert variables(rendered(tmp_path, accel=accel))["qemu_accel"] == option


def test_recipe_values_reach_the_scripts_environment(tmp_path):
    extra = ('\n[install]\nmode = "frugal"\n[boot]\ndisk = ["waitusb=5", "quiet"]\n[vm]\ncpus = 2\n'
             '[live]\nonboot = ["openssh", "e2fsprogs", "syslinux.tcz"]\n'
             'install_only = ["syslinux.tcz", "e2fsprogs"]\n')
    vals = variables(rendered(tmp_path, extra=extra))
    env = dict(item.split("=", 1) for item in vals["install_env"])
    assert env["APPLIANCE_MODE"] == "frugal"
    assert env["APPLIANCE_INSTALL_ONLY"] == "syslinux.tcz e2fsprogs.tcz"
    assert env["APPLIANCE_BOOT_CODES"] == "waitusb=5 quiet noautologin"
    assert env["APPLIANCE_EXTENSIONS"] == "openssh.tcz containerd.tcz faasd.tcz"
    assert env["APPLIANCE_INITRDS"] == "/boot/corepure64.gz /boot/appliance.gz"  # no build.gz
    assert env["APPLIANCE_DISKROOT"] == "/boot/diskroot.gz"  # the traditional root's /init
    assert "APPLIANCE_SERVICES=containerd faasd" in vals["verify_env"]
    assert vals["cpus"] == 2


HOSTILE = ['a"b', "${file(\"/etc/shadow\")}", "%{ if true }x%{ endif }", "line\nbreak",
           "back\\slash", "tab\there", "$${already}", "ends with $"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_come_back_unchanged_from_hcl(value):
    parsed = hcl2.loads(f"x = {hcl.literal(value)}\n")
    assert parsed["x"] == _as_hcl2_reports(value)


def _as_hcl2_reports(value: str) -> str:
    # python-hcl2 returns template escapes ($${ -> ${) unprocessed but decodes the rest
    return value.replace("${", "$${").replace("%{", "%%{")


def test_a_hostile_path_in_the_var_file_is_one_literal_string(tmp_path):
    parsed = rendered(tmp_path, iso_name='evil"${path.root}\n%{x}.iso')
    url = variables(parsed)["iso_url"]
    assert "\n" not in url and url.count('"') == 0  # as_uri() percent-encodes what remains
    vals = packer_template.values(recipe(tmp_path), build(tmp_path, iso_name="a${b}.iso"))
    vals["vm_name"] = 'x"${y}%{z}\nw'
    texts = packer_template.render_texts(TEMPLATES, vals, (1, 6, 6))
    assert 'vm_name = "x\\"$${y}%%{z}\\nw"' in texts[packer_template.VAR_FILE]
    assert hcl2.loads(texts[packer_template.VAR_FILE])["vm_name"] == 'x"$${y}%%{z}\nw'


def test_non_scalar_values_and_control_characters_are_refused():
    with pytest.raises(StageError):
        hcl.literal(3.5)
    with pytest.raises(StageError, match="0x07"):
        hcl.literal("bell\x07")
    assert hcl.literal({"a": [1, True]}) == '{"a" = [1, true]}'


def test_a_broken_rendering_names_the_file_and_line(tmp_path):
    with pytest.raises(StageError) as err:
        packer_template.parse("appliance.pkr.hcl", 'source "qemu" "x" {\n  a = \n}\n')
    assert "appliance.pkr.hcl:" in str(err.value)


def test_a_template_with_an_undefined_name_fails_clearly(tmp_path):
    (tmp_path / "appliance.pkr.hcl.j2").write_text("x = {{ nothing_here }}\n")
    (tmp_path / "appliance.pkrvars.hcl.j2").write_text("")
    with pytest.raises(StageError) as err:
        packer_template.render_texts(tmp_path, {"a": "b"}, (1, 6, 6))
    assert "nothing_here" in str(err.value)


def test_render_writes_parsed_files_and_the_scripts(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    vals = packer_template.values(recipe(tmp_path), build(tmp_path))
    written = packer_template.render(TEMPLATES, work, vals, (1, 7, 0))
    assert set(written) == {packer_template.TEMPLATE, packer_template.VAR_FILE,
                            packer_template.PLUGINS}
    for script in packer_template.SCRIPTS:
        path = work / "scripts" / script
        assert path.read_bytes() == (TEMPLATES / "scripts" / script).read_bytes()
        assert path.stat().st_mode & 0o111


def test_install_only_changes_the_packer_stage_key(tmp_path):
    plain = packer_stage.key_slice(recipe(tmp_path))
    extra = '\n[live]\nonboot = ["openssh", "e2fsprogs"]\ninstall_only = ["e2fsprogs"]\n'
    left_out = packer_stage.key_slice(recipe(tmp_path, extra))
    assert plain["install_only"] == [] and left_out["install_only"] == ["e2fsprogs.tcz"]
