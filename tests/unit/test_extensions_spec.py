"""extension.toml (overlay_spec), tree layout (overlay_tree) and .dep resolution (extensions):
user mistakes end in clear messages, and the real overlays/ pass every check."""

from __future__ import annotations

import io
import re
import tarfile
import tomllib
from pathlib import Path

import pytest

from appliance.errors import ConfigError, StageError
from appliance.paths import REPO
from appliance.stages.extensions import overlay_spec, overlay_tree
from appliance.stages.extensions import stage as extensions

MINIMAL = """
name = "demo"
version = "1.0"
[info]
Description = "a demo"
Author = "someone"
Original-site = "https://example.org/"
Copying-policy = "MIT"
"""


def overlay(tmp_path: Path, text: str, name: str = "demo") -> Path:
    folder = tmp_path / name
    (folder / "root").mkdir(parents=True, exist_ok=True)
    (folder / "extension.toml").write_text(text)
    return folder


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        overlay_spec.load(overlay(tmp_path, text))
    return str(err.value)


def test_the_repository_overlays_load():
    specs = {p.name: overlay_spec.load(p) for p in sorted((REPO / "overlays").iterdir())}
    assert set(specs) == {"containerd", "faasd", "faasd-images"}
    assert specs["faasd"].required_modules == ["overlay"]
    assert specs["containerd"].deps == ["iptables.tcz", "net-bridging-KERNEL.tcz"]


def test_unknown_key_is_named_with_its_file(tmp_path):
    msg = problems(tmp_path, MINIMAL + "\n[[install]]\nrelease = \"x\"\nto = \"a/\"\ncolour = 1\n")
    assert "extension.toml: install[0].colour: unknown key" in msg


def test_a_path_escaping_root_is_refused(tmp_path):
    msg = problems(tmp_path, MINIMAL + '\n[[install]]\nrelease = "runc"\nto = "../../etc/x"\n')
    assert "install[0].to: '../../etc/x' escapes the extension's root" in msg
    msg = problems(tmp_path, MINIMAL + '\n[files."/etc/passwd"]\nmode = "0644"\n')
    assert "'/etc/passwd' escapes the extension's root" in msg


def test_info_fields_are_checked(tmp_path):
    msg = problems(tmp_path, MINIMAL.replace('Author = "someone"', 'Authr = "someone"'))
    assert "info: unknown .info field 'Authr'" in msg
    assert "Title, Size and Version are computed" in msg


def test_version_and_modules_are_consistent(tmp_path):
    text = MINIMAL.replace('version = "1.0"', 'version = "1"\nversion_from = "x"\n'
                                              'required_modules = ["overlay"]')
    msg = problems(tmp_path, text)
    assert "give exactly one of version" in msg
    assert "required_modules ['overlay'] must also be in module_deps" in msg


def test_name_must_match_the_folder(tmp_path):
    folder = overlay(tmp_path, MINIMAL, name="other")
    with pytest.raises(ConfigError, match="'demo' must equal the folder name 'other'"):
        overlay_spec.load(folder)


def test_select_names_missing_overlays(tmp_path):
    overlay(tmp_path, MINIMAL)
    assert overlay_spec.select(tmp_path, None) == [tmp_path / "demo"]
    with pytest.raises(ConfigError, match="no folder overlays/nope/"):
        overlay_spec.select(tmp_path, ["demo", "nope"])


# --- the tree ---------------------------------------------------------------------------


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def spec_with(tmp_path: Path, extra: str) -> tuple[overlay_spec.ExtensionSpec, Path]:
    folder = overlay(tmp_path, MINIMAL + extra)
    return overlay_spec.load(folder), folder


def test_a_missing_binary_names_the_pattern_and_what_the_release_has(tmp_path):
    spec, folder = spec_with(tmp_path, '[[install]]\nrelease = "ctd"\nmembers = ["bin/ctrx"]\n'
                                       'to = "usr/local/bin/"\n')
    rel = tarball(tmp_path / "ctd.tar.gz", {"bin/ctr": b"x", "bin/containerd": b"y"})
    with pytest.raises(StageError) as err:
        overlay_tree.stage_tree(spec, folder, tmp_path / "tree", {"ctd": rel}, [], {}, 0)
    assert "release 'ctd' (ctd.tar.gz) has no member matching 'bin/ctrx'" in str(err.value)
    assert "it has: bin/containerd, bin/ctr" in str(err.value)


def test_release_members_land_flat_with_their_modes(tmp_path):
    spec, folder = spec_with(
        tmp_path, '[[install]]\nrelease = "ctd"\nmembers = ["bin/*"]\nexclude = ["bin/stress"]\n'
                  'to = "usr/local/bin/"\n\n[[install]]\nrelease = "cfg"\n'
                  'to = "usr/local/share/demo/c.yaml"\nmode = "0644"\n')
    rel = tarball(tmp_path / "ctd.tgz", {"./bin/ctr": b"x", "./bin/stress": b"s"})
    (tmp_path / "c.yaml").write_text("a: 1\n")
    tree = tmp_path / "tree"
    overlay_tree.stage_tree(spec, folder, tree, {"ctd": rel, "cfg": tmp_path / "c.yaml"},
                            [], {}, 0)
    assert (tree / "usr/local/bin/ctr").stat().st_mode & 0o777 == 0o755
    assert not (tree / "usr/local/bin/stress").exists()
    assert (tree / "usr/local/share/demo/c.yaml").stat().st_mode & 0o777 == 0o644


def test_a_symlink_in_root_is_refused_with_the_reason(tmp_path):
    spec, folder = spec_with(tmp_path, "")
    (folder / "root" / "lib64").symlink_to("lib")
    with pytest.raises(StageError) as err:
        overlay_tree.stage_tree(spec, folder, tmp_path / "tree", {}, [], {}, 0)
    assert "root/lib64 is a symlink" in str(err.value)
    assert "usr/local/tce.installed/demo" in err.value.hint


def test_runtime_written_paths_are_never_shipped(tmp_path):
    spec, folder = spec_with(tmp_path, "")
    (folder / "root/var/lib/faasd/secrets").mkdir(parents=True)
    (folder / "root/var/lib/faasd/secrets/basic-auth-password").write_text("x")
    with pytest.raises(StageError, match="below var/lib/faasd, which faasd's service writes"):
        overlay_tree.stage_tree(spec, folder, tmp_path / "tree", {}, [],
                                {"var/lib/faasd": "faasd's service"}, 0)


def test_modes_follow_the_executable_bit_not_the_umask(tmp_path):
    spec, folder = spec_with(tmp_path, '[files."etc/x"]\nmode = "0600"\n')
    for name, mode in (("etc/x", 0o664), ("etc/y", 0o666), ("bin/z", 0o775)):
        (folder / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "root" / name).write_text(name)
        (folder / "root" / name).chmod(mode)
    tree = tmp_path / "tree"
    overlay_tree.stage_tree(spec, folder, tree, {}, [], {}, 0)
    modes = {n: (tree / n).stat().st_mode & 0o777 for n in ("etc/x", "etc/y", "bin/z", "etc")}
    assert modes == {"etc/x": 0o600, "etc/y": 0o644, "bin/z": 0o755, "etc": 0o755}


# --- dependencies -------------------------------------------------------------------------


def available(**modules: str) -> extensions.Available:
    avail = extensions.Available("6.1.192-tinycore64")
    for name in ("iptables.tcz", "net-bridging-6.1.192-tinycore64.tcz"):
        avail.add(name, Path(name), [], "tinycore", "0" * 32)
    for module, carrier in modules.items():
        avail.add(carrier, Path(carrier), [], "kernel", "0" * 32)
        avail.modules[module] = carrier
        avail.kernel_names[carrier] = carrier.replace("-6.1.192-tinycore64", "-KERNEL")
    return avail


def repo_spec(name: str) -> overlay_spec.ExtensionSpec:
    return overlay_spec.load(REPO / "overlays" / name)


def test_kernel_stage_extensions_join_dep_under_their_kernel_name():
    avail = available(overlay="overlay-6.1.192-tinycore64.tcz")
    lines, problems = extensions.dep_lines(repo_spec("containerd"), avail)
    assert lines == ["iptables.tcz", "net-bridging-KERNEL.tcz", "overlay-KERNEL.tcz"]
    assert problems == []


def test_a_required_module_nobody_builds_is_an_error_and_an_optional_one_a_warning(capsys):
    lines, problems = extensions.dep_lines(repo_spec("containerd"), available())
    assert lines == ["iptables.tcz", "net-bridging-KERNEL.tcz"] and problems == []
    assert "no extension carries kernel module 'overlay'" in capsys.readouterr().err
    _, problems = extensions.dep_lines(repo_spec("faasd"), available())
    assert problems == ["faasd.tcz needs kernel module 'overlay', and no extension of the "
                        "kernel stage carries it (add it to kernel.modules in the recipe)"]


def test_every_dependency_must_be_fetched_or_built():
    avail = available()
    del avail.paths["iptables.tcz"]
    specs = [repo_spec("containerd")]
    with pytest.raises(StageError) as err:
        extensions.check_deps(specs, {"containerd.tcz": ["iptables.tcz"]}, avail)
    assert "containerd.tcz depends on iptables.tcz, which is neither fetched" in str(err.value)
    assert "tinycore.extensions" in err.value.hint


def test_compose_images_must_all_be_shipped(tmp_path):
    from appliance.config import Recipe

    compose = tmp_path / "docker-compose.yaml"
    compose.write_text("services:\n  gateway:\n    image: ghcr.io/openfaas/gateway:0.27.12\n"
                       "  nats:\n    image: \"docker.io/library/nats-streaming:0.25.6\"\n")
    recipe = Recipe.model_validate({"tinycore": {"mirrors": ["http://m/"],
                                                 "guest_mirror": "http://m/"},
                                    "images": [{"name": "ghcr.io/openfaas/gateway:0.27.12"}]})
    with pytest.raises(StageError, match="docker.io/library/nats-streaming:0.25.6"):
        extensions.check_compose(repo_spec("faasd-images"), recipe,
                                 {"faasd-compose": compose})


# --- the shell scripts' data agrees with the rest of the repository -----------------------


def script(name: str) -> str:
    return (REPO / "overlays" / name / "root/usr/local/etc/init.d" / name).read_text()


def test_containerd_loads_the_modules_kernel_options_lists():
    options = tomllib.loads((REPO / "kernel/options.toml").read_text())["option"]
    wanted = {o["module"] for o in options
              if o.get("module") and o.get("component") in ("cni", "faasd")}
    # stp, llc and ipv6 are bridge's dependencies: modprobe loads them with it
    wanted -= {"stp", "llc", "ipv6"}
    found = re.search(r'MODULES=\$\{CONTAINERD_MODULES:-"([^"]*)"\}', script("containerd"))
    assert found and set(found.group(1).replace("\\\n", " ").split()) == wanted


def test_runtime_paths_of_the_scripts_are_declared():
    specs = {n: repo_spec(n) for n in ("containerd", "faasd")}
    assert {"var/lib/containerd", "etc/cni/net.d"} <= set(specs["containerd"].runtime.writes)
    assert {"var/lib/faasd", "var/lib/faasd-provider"} <= set(specs["faasd"].runtime.writes)
    assert "set -x" not in script("faasd")  # the password must never reach a trace


def test_every_overlay_script_is_posix_sh_with_set_eu():
    scripts = [p for p in (REPO / "overlays").rglob("*") if p.is_file()
               and p.read_bytes()[:2] == b"#!"]
    assert len(scripts) == 3
    for path in scripts:
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n"), path
        assert "\nset -eu\n" in text, path


def test_an_owner_from_extension_toml_reaches_the_pseudo_file(tmp_path):
    from appliance.tinycore import tcz

    spec, folder = spec_with(tmp_path, '[files."home/tc/notes"]\nowner = "tc:staff"\n')
    (folder / "root/home/tc").mkdir(parents=True)
    (folder / "root/home/tc/notes").write_text("x")
    tree = tmp_path / "tree"
    overlay_tree.stage_tree(spec, folder, tree, {}, [], {}, 0)
    owners = {rel: o for rel in spec.files if (o := spec.owner_of(rel))}
    lines = tcz.pseudo_definitions(tree, owners)
    assert "home/tc/notes m 644 1001 50" in lines and "home/tc m 755 0 0" in lines
