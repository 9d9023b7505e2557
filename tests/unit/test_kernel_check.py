"""kernel-check on the real tc11 config, a complete config, and things that are not configs."""

import json

import pytest

from appliance.cli import main
from appliance.errors import PipelineError
from appliance.paths import data_dir
from appliance.stages.kernel import check as kernel

TC11 = data_dir("kernel") / "tc11-config-5.4.3-tinycore64"


def verdicts(text, built=None):
    return {v.name: v for v in kernel.judge(kernel.read_config(text, "cfg"),
                                            kernel.load_options(), built)}


def test_tc11_config_reports_exactly_what_the_notes_found():
    found = verdicts(TC11.read_text())
    assert kernel.missing_required(list(found.values())) == ["OVERLAY_FS"]
    assert not found["MEMCG"].ok and found["MEMCG"].level == "recommended"
    assert "memory cgroup not supported" in found["MEMCG"].breaks
    for name, module, where in [("BRIDGE", "bridge", "net-bridging-KERNEL.tcz"),
                                ("VETH", "veth", "the base initramfs (corepure64.gz)"),
                                ("NF_NAT", "nf_nat", "ipv6-netfilter-KERNEL.tcz")]:
        assert found[name].ok and found[name].state == "module"
        assert found[name].how == f"{module}.ko in {where}"
    for ns in ("NAMESPACES", "UTS_NS", "IPC_NS", "PID_NS", "NET_NS"):
        assert found[ns].state == "built in" and found[ns].ok
    assert found["MODVERSIONS"].ok  # unset, as a module built with M= needs


def test_counting_the_kernel_stage_modules_makes_tc11_ready():
    built = {"overlay": "overlay-5.4.3-tinycore64.tcz, built by the kernel stage"}
    found = verdicts(TC11.read_text(), built)
    assert kernel.missing_required(list(found.values())) == []
    assert found["OVERLAY_FS"].how == "overlay.ko in overlay-5.4.3-tinycore64.tcz, built by the kernel stage"


def complete_config():
    lines = []
    for option in kernel.load_options().options:
        value = {"off": "n", "any": "n"}.get(option.wanted, "y")
        lines.append(f"# CONFIG_{option.name} is not set" if value == "n"
                     else f"CONFIG_{option.name}={value}")
    return "\n".join(lines) + "\nCONFIG_64BIT=y\n"


def test_a_config_with_everything_meets_everything():
    found = verdicts(complete_config())
    assert all(v.ok for v in found.values()), [n for n, v in found.items() if not v.ok]


def test_set_where_it_must_be_off_and_module_where_built_in_is_needed():
    text = complete_config().replace("# CONFIG_MODVERSIONS is not set", "CONFIG_MODVERSIONS=y")
    text = text.replace("CONFIG_EXT4_FS=y", "CONFIG_EXT4_FS=m")
    found = verdicts(text)
    assert not found["MODVERSIONS"].ok and found["MODVERSIONS"].how == "(must not be set)"
    assert not found["EXT4_FS"].ok and "must be built in" in found["EXT4_FS"].how


@pytest.mark.parametrize("text, message", [
    ("hello world\n", "cfg:1: not a kernel config line"),
    ("# just a comment\n", "cfg: no CONFIG_ lines: not a kernel config"),
    ("CONFIG_OVERLAY_FS=m\nCONFIG_VETH=m\n", "cfg: no core symbols"),
])
def test_not_a_config_is_a_clear_error(text, message):
    with pytest.raises(PipelineError) as info:
        kernel.read_config(text, "cfg")
    assert str(info.value).startswith(message)


def test_cli_exit_codes_table_and_json(tmp_path, capsys):
    assert main(["kernel-check", str(TC11)]) == 1
    out = capsys.readouterr().out
    assert "MISS  OVERLAY_FS" in out
    assert "result: 1 required option(s) missing: OVERLAY_FS" in out
    good = tmp_path / "good.config"
    good.write_text(complete_config())
    assert main(["kernel-check", "--json", str(good)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is True and data["missing_required"] == []


def test_cli_missing_file_and_truncated_file(tmp_path, capsys):
    assert main(["kernel-check", str(tmp_path / "nope")]) == 1
    assert "cannot read" in capsys.readouterr().err
    cut = tmp_path / "cut.config"
    cut.write_text(TC11.read_text()[:3000])  # cut mid-line
    assert main(["kernel-check", str(cut)]) == 1
    assert f"{cut}:130: not a kernel config line: 'CONFI" in capsys.readouterr().err
    cut.write_text("".join(TC11.read_text().splitlines(keepends=True)[:40]))  # only the head
    assert main(["kernel-check", str(cut)]) == 1
    assert "no core symbols" in capsys.readouterr().err


def test_cli_recipe_config_counts_the_modules_the_stage_builds(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    cfg = mirror / "11.x" / "x86_64" / "release" / "src" / "kernel" / "config-5.4.3-tinycore64"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(TC11.read_text())
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[tinycore]
mirrors = ["{mirror.as_uri()}/"]
guest_mirror = "http://10.0.2.2:9/"
[kernel]
config = "release/src/kernel/config-5.4.3-tinycore64"
source = "release/src/kernel/linux-5.4.3-patched.txz"
modules = ["overlay"]
""")
    assert main(["kernel-check", "-c", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "overlay.ko in overlay-5.4.3-tinycore64.tcz, built by the kernel stage" in out
