"""The kernel stage without a kernel: argv builders, kernel/ data, checks and packaging."""

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from appliance.config import Recipe
from appliance.errors import StageError
from appliance.paths import data_dir
from appliance.run import Runner
from appliance.stages.kernel import check as kernel
from appliance.stages.kernel import package as kernel_package
from appliance.stages.kernel import stage as kernel_build
from appliance.stages.kernel.kconfig import ConfigFormatError, parse_options
from appliance.stages.order import STAGES
from tests.fakes import FakeRunner

KVER = "6.1.192-tinycore64"
SRC = Path("/b/kernel.tmp/src/linux-source-6.1")
MAGIC = f"{KVER} SMP mod_unload "


def recipe(**kernel_fields) -> Recipe:
    return Recipe.model_validate({
        "tinycore": {"mirrors": ["http://127.0.0.1:1/"], "guest_mirror": "http://10.0.2.2:1/",
                     "kernel": KVER, "extensions": ["iptables"]},
        "kernel": kernel_fields})


BUILDS = {"config": "release/src/kernel/config", "source": "release/src/kernel/linux.txz"}


# --- argv builders -------------------------------------------------------------------------


def test_argv_builders():
    assert kernel_build.tar_argv(Path("/c/linux.txz"), Path("/w/src")) == [
        "tar", "-xf", "/c/linux.txz", "-C", "/w/src", "--no-same-owner"]
    assert kernel_build.make_argv(SRC, ["olddefconfig"]) == [
        "make", "--no-print-directory", "-C", str(SRC), "olddefconfig"]
    assert kernel_build.make_argv(SRC, ["modules_prepare"], 2) == [
        "make", "--no-print-directory", "-C", str(SRC), "-j", "2", "modules_prepare"]
    assert kernel_build.module_make_argv(SRC, "fs/overlayfs", 4) == [
        "make", "--no-print-directory", "-C", str(SRC), "-j", "4", "M=fs/overlayfs", "KBUILD_MODPOST_WARN=1", "modules"]
    assert kernel_build.modules_install_argv(SRC, Path("/w/modroot"), "/sbin/depmod") == [
        "make", "--no-print-directory", "-C", str(SRC), "INSTALL_MOD_PATH=/w/modroot", "DEPMOD=/sbin/depmod",
        "modules_install"]
    cc = ("CC=gcc-11", "HOSTCC=gcc-11")
    assert kernel_build.module_make_argv(SRC, "fs/overlayfs", 4, cc) == [
        "make", "--no-print-directory", "-C", str(SRC), "CC=gcc-11", "HOSTCC=gcc-11", "-j", "4",
        "M=fs/overlayfs", "KBUILD_MODPOST_WARN=1", "modules"]
    assert kernel_build.make_argv(SRC, ["-s", "kernelrelease"], cc=cc)[4:6] == list(cc)
    assert kernel_build.config_argv(SRC, {"OVERLAY_FS": "m", "MEMCG": "y"}) == [
        f"{SRC}/scripts/config", "--file", ".config", "--module", "OVERLAY_FS",
        "--enable", "MEMCG"]
    assert kernel_package.modinfo_argv(Path("/k/overlay.ko")) == [
        "modinfo", "-F", "vermagic", "/k/overlay.ko"]
    assert kernel_package.unsquashfs_argv(Path("/f/n.tcz"), Path("/w/t")) == [
        "unsquashfs", "-no-progress", "-no-xattrs", "-d", "/w/t", "/f/n.tcz"]


def test_build_env_fixes_the_stamps_and_stops_the_plus_suffix():
    env = kernel_build.build_env(1704067200)
    assert env["LOCALVERSION"] == ""  # set (even empty): setlocalversion appends no '+'
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Mon Jan 01 00:00:00 UTC 2024"
    assert env["ARCH"] == "x86_64"
    # a make that started the pipeline (make demo) must not reach the kernel's make
    assert {env[v] for v in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")} == {None}


# --- kernel/modules.toml and kernel/containers.config ---------------------------------------


def test_the_shipped_module_list_has_overlay():
    specs = kernel_build.load_modules()
    overlay = specs["overlay"]
    assert overlay.options == (("OVERLAY_FS", "m"),)
    assert overlay.sources == ["fs/overlayfs/overlay.ko"]


def test_module_list_agrees_with_options_toml():
    """Every module options.toml says the kernel stage can build has a build recipe here,
    and each recipe's options name that module in options.toml."""
    options = parse_options((data_dir("kernel") / "options.toml").read_text())
    specs = kernel_build.load_modules()
    buildable = {o.module for o in options.options if o.tc11 == "n" and o.module}
    assert buildable <= set(specs)
    by_name = options.by_name()
    for spec in specs.values():
        for symbol, _ in spec.options:
            assert by_name[symbol].module == spec.name


def test_containers_fragment_turns_on_every_recommended_option_tc11_lacks():
    options = parse_options((data_dir("kernel") / "options.toml").read_text())
    fragment = kernel_build.load_fragment()
    lacking = {o.name for o in options.options
               if o.tc11 == "n" and o.wanted == "on" and not o.module}
    assert {"MEMCG", "CFS_BANDWIDTH"} <= lacking
    assert {name: fragment.get(name) for name in lacking} == dict.fromkeys(lacking, "y")


def test_module_list_errors_are_reported_together():
    text = """
    bogus = 1
    [module.overlay]
    options = { CONFIG_OVERLAY_FS = "y" }
    dir = "../fs"
    files = ["overlay.o"]
    colour = "blue"
    [module.empty]
    """
    with pytest.raises(ConfigFormatError) as err:
        kernel_build.parse_modules(text, "m.toml")
    message = str(err.value)
    for expected in ["m.toml:", "unknown top-level key 'bogus'",
                     "module.overlay: unknown key 'colour'",
                     "module.overlay: missing 'description'",
                     "option 'CONFIG_OVERLAY_FS' must be a symbol without CONFIG_",
                     "CONFIG_OVERLAY_FS = 'y': a module build sets \"m\"",
                     "dir '../fs' must be a relative path",
                     "files must be a list of .ko paths",
                     "module.empty: missing 'options'"]:
        assert expected in message


def test_module_list_that_is_not_toml():
    with pytest.raises(ConfigFormatError, match="^m.toml: "):
        kernel_build.parse_modules("[module.x\n", "m.toml")


# --- what the recipe asks for ----------------------------------------------------------------


def test_idle_unless_modules_or_a_full_rebuild():
    assert "no kernel module build requested" in kernel_build.idle_reason(recipe())
    assert kernel_build.key_slice(recipe()) is None
    assert kernel_build.idle_reason(recipe(modules=["overlay"], **BUILDS)) is None
    assert kernel_build.idle_reason(recipe(rebuild="full", **BUILDS)) is None
    modules = kernel_build.key_slice(recipe(modules=["overlay"], **BUILDS))
    assert modules["release"] == KVER and modules["extensions"] is None
    assert kernel_build.key_slice(recipe(rebuild="full", **BUILDS))["extensions"] == ["iptables"]


def test_the_stage_is_wired_with_its_tools_and_data():
    stage = next(s for s in STAGES if s.name == "kernel")
    assert stage.run is kernel_build.run and stage.data == "kernel"
    assert {t[0] for t in stage.tools} >= {"make", "gcc"}
    assert stage.idle(recipe()) and stage.idle(recipe(modules=["overlay"], **BUILDS)) is None


def test_settings_for_modules_and_full_rebuild():
    specs = kernel_build.load_modules()
    fragment = {"MEMCG": "y", "CFS_BANDWIDTH": "y"}
    assert kernel_build.settings_for(["overlay"], "none", specs, fragment) == {"OVERLAY_FS": "m"}
    assert kernel_build.settings_for(["overlay"], "full", specs, fragment) == {
        "MEMCG": "y", "CFS_BANDWIDTH": "y", "OVERLAY_FS": "m"}
    assert kernel_build.settings_for([], "full", specs, fragment) == fragment
    with pytest.raises(StageError, match="no build recipe for zfs in kernel/modules.toml") as err:
        kernel_build.settings_for(["overlay", "zfs"], "none", specs, fragment)
    assert "known modules: overlay" in err.value.hint
    with pytest.raises(StageError, match="sets OVERLAY_FS=m, but kernel/containers.config"):
        kernel_build.settings_for(["overlay"], "full", specs, {"OVERLAY_FS": "y"})


# --- checks --------------------------------------------------------------------------------


def kernel_tree(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "Makefile").write_text("VERSION = 6\n")
    (path / "Kconfig").write_text("mainmenu \"Linux\"\n")
    return path


def test_top_folder_is_detected_whatever_its_name(tmp_path):
    tree = kernel_tree(tmp_path / "linux-source-6.1")  # Debian's name, not linux-6.1.192/
    assert kernel_build.top_folder(tmp_path, "linux-6.1.192-patched.txz") == tree


@pytest.mark.parametrize("layout, expected", [
    (["linux-5.4.3/", "pax_global_header"], "found linux-5.4.3, pax_global_header"),
    (["Makefile"], "expected a single top-level folder, found Makefile"),
    ([], "found nothing"),
    (["tree/"], "tree/ has no Makefile and Kconfig at its top"),
])
def test_top_folder_refuses_other_layouts(tmp_path, layout, expected):
    for name in layout:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    with pytest.raises(StageError, match=expected):
        kernel_build.top_folder(tmp_path, "src.txz")


def test_release_must_be_the_recipes_kernel():
    noise = "make[1]: Entering directory '/x'\n"
    assert kernel_build.check_release(noise + KVER + "\n", KVER, "s.txz", "c") == KVER
    with pytest.raises(StageError) as err:
        kernel_build.check_release("5.4.3-tinycore64\n", KVER, "linux-5.4.3-patched.txz",
                                   "config-5.4.3-tinycore64")
    assert ("linux-5.4.3-patched.txz with config-5.4.3-tinycore64 builds release "
            "'5.4.3-tinycore64', but the recipe's tinycore.kernel is '6.1.192-tinycore64': "
            "the source/config do not match the ISO's kernel") in str(err.value)
    with pytest.raises(StageError, match=r"builds release '6.1.192-tinycore64\+'"):
        kernel_build.check_release(KVER + "+\n", KVER, "s", "c")


def test_vermagic_must_start_with_the_release_exactly():
    assert kernel_package.check_vermagic(MAGIC + "\n", KVER, "overlay.ko") == MAGIC.strip()
    for wrong in ("6.1.192-tinycore64+ SMP mod_unload", "5.4.3-tinycore64 SMP", ""):
        with pytest.raises(StageError, match="overlay.ko: vermagic .* is not for release"):
            kernel_package.check_vermagic(wrong, KVER, "overlay.ko")


def test_progress_is_one_line_per_interval():
    now, said = [0.0], []
    progress = kernel_build.Progress("make", every=30, clock=lambda: now[0], say=said.append)
    for t in range(0, 95):
        now[0] = float(t)
        progress(f"  CC      file{t}.o")
    assert len(said) == 3
    assert said[0] == "kernel: make: 30 s, 31 lines, at CC      file30.o"


def test_a_failed_step_names_the_step_and_the_log(tmp_path):
    steps = kernel_build.Steps(Runner(log_dir=tmp_path, echo=lambda line: None), {})
    with pytest.raises(StageError) as err:
        steps.run("make modules_prepare", ["sh", "-c", "echo 'objtool: error'; exit 2"],
                  hint=kernel_build.TOOLCHAIN_HINT)
    message = str(err.value)
    assert "kernel: step 'make modules_prepare' failed: sh failed with exit code 2" in message
    assert "objtool: error" in message and f"full log: {tmp_path}/kernel.log" in message
    assert "may need an older GCC" in err.value.hint


# --- packaging ----------------------------------------------------------------------------


def fake_tools(vermagic=MAGIC, unsquashed=()):
    """mksquashfs writes its output; modinfo answers vermagic; unsquashfs lays out modules."""

    def respond(argv):
        if argv[0] == "mksquashfs":
            Path(argv[2]).write_bytes(b"squashfs of " + argv[1].encode())
        elif argv[0] == "modinfo":
            return 0, vermagic
        elif argv[0] == "unsquashfs":
            for rel in unsquashed:
                path = Path(argv[4]) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"old module")
        return 0, ""

    return FakeRunner(respond)


def packager(tmp_path, runner) -> kernel_package.Packager:
    steps = kernel_build.Steps(runner, {})
    work = tmp_path / "work"
    work.mkdir()
    return kernel_package.Packager(runner, steps, work, KVER, 1704067200, "linux.txz with cfg")


def test_module_extension_layout(tmp_path):
    src = tmp_path / "src"
    (src / "fs/overlayfs").mkdir(parents=True)
    (src / "fs/overlayfs/overlay.ko").write_bytes(b"\x7fELF fake module")
    pack = packager(tmp_path, fake_tools())
    outputs = pack.modules_only(src, [kernel_build.load_modules()["overlay"]])
    inside = f"usr/local/lib/modules/{KVER}/kernel/fs/overlayfs/overlay.ko"
    tree = pack.work / "trees" / f"overlay-{KVER}"
    assert (tree / inside).read_bytes() == b"\x7fELF fake module"
    assert (tree / inside).stat().st_mode & 0o777 == 0o644
    assert (tree / "usr/local/lib/modules").stat().st_mode & 0o777 == 0o755
    name = f"overlay-{KVER}.tcz"
    assert sorted(outputs) == [name, f"{name}.info", f"{name}.list", f"{name}.md5.txt"]
    assert outputs[f"{name}.list"].read_text() == inside + "\n"
    assert "Modules: overlay" in outputs[f"{name}.info"].read_text()
    assert pack.entries == [{"name": name, "kernel_name": "overlay-KERNEL.tcz",
                             "modules": ["overlay"], "files": [inside], "deps": [],
                             "replaces": None}]
    assert ["modinfo", "-F", "vermagic", str(src / "fs/overlayfs/overlay.ko")] in \
        pack.runner.calls


def test_module_with_the_wrong_vermagic_or_missing_is_not_packaged(tmp_path):
    src = tmp_path / "src"
    (src / "fs/overlayfs").mkdir(parents=True)
    spec = kernel_build.load_modules()["overlay"]
    pack = packager(tmp_path, fake_tools(vermagic="5.4.3-tinycore64 SMP mod_unload"))
    with pytest.raises(StageError, match="the build did not produce fs/overlayfs/overlay.ko"):
        pack.modules_only(src, [spec])
    (src / "fs/overlayfs/overlay.ko").write_bytes(b"module")
    with pytest.raises(StageError, match="vermagic '5.4.3-tinycore64 SMP mod_unload'"):
        pack.modules_only(src, [spec])
    assert not list(pack.work.glob("*.tcz"))


def test_full_rebuild_replaces_every_module_of_a_fetched_kernel_extension(tmp_path):
    rels = ["net/bridge/bridge.ko", "drivers/net/veth.ko"]
    moddir = tmp_path / "modroot" / "lib" / "modules" / KVER
    for rel in rels:
        (moddir / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
        (moddir / "kernel" / rel).write_bytes(b"new " + rel.encode())
    unsquashed = [kernel_package.inside_path(KVER, r) for r in rels]
    pack = packager(tmp_path, fake_tools(unsquashed=unsquashed))
    name = f"net-bridging-{KVER}.tcz"
    pack.replace_extension(f"tcz/{name}", tmp_path / name, moddir,
                           [f"ipv6-netfilter-{KVER}.tcz"])
    tree = pack.work / "trees" / name.removesuffix(".tcz")
    assert (tree / unsquashed[0]).read_bytes() == b"new net/bridge/bridge.ko"
    entry = pack.entries[0]
    assert entry["replaces"] == f"tcz/{name}" and entry["modules"] == ["bridge", "veth"]
    assert entry["deps"] == ["ipv6-netfilter-KERNEL.tcz"]
    assert (pack.work / f"{name}.dep").read_text() == "ipv6-netfilter-KERNEL.tcz\n"
    (moddir / "kernel" / rels[1]).unlink()
    shutil.rmtree(pack.work / "trees")
    with pytest.raises(StageError, match="carries drivers/net/veth.ko, which the rebuilt"):
        pack.replace_extension(f"tcz/{name}", tmp_path / name, moddir, [])


def test_full_rebuild_rewrites_a_gzipped_module_gzipped(tmp_path):
    moddir = tmp_path / "modroot" / "lib" / "modules" / KVER
    (moddir / "kernel/net/bridge").mkdir(parents=True)
    (moddir / "kernel/net/bridge/bridge.ko").write_bytes(b"new bridge")
    inside = kernel_package.inside_path(KVER, "net/bridge/bridge.ko.gz")
    pack = packager(tmp_path, fake_tools(unsquashed=[inside]))
    name = f"net-bridging-{KVER}.tcz"
    pack.replace_extension(f"tcz/{name}", tmp_path / name, moddir, [])
    written = (pack.work / "trees" / name.removesuffix(".tcz") / inside).read_bytes()
    assert gzip.decompress(written) == b"new bridge"
    assert written[4:8] == b"\0\0\0\0"  # no mtime, as gzip -n: reproducible
    assert pack.entries[0]["files"] == [inside] and pack.entries[0]["modules"] == ["bridge"]
    assert (pack.work / f"{name}.list").read_text() == inside + "\n"
    # the vermagic check reads the plain module the build made
    assert ["modinfo", "-F", "vermagic", str(moddir / "kernel/net/bridge/bridge.ko")] in \
        pack.runner.calls


def test_modules_in_refuses_compressed_or_misplaced_modules(tmp_path):
    base = tmp_path / "usr/local/lib/modules" / KVER / "kernel"
    (base / "net").mkdir(parents=True)
    (base / "net/a.ko").write_bytes(b"")
    assert kernel_package.modules_in(tmp_path, KVER, "x.tcz") == ["net/a.ko"]
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/b.ko").write_bytes(b"")
    with pytest.raises(StageError, match="lib/b.ko is not below"):
        kernel_package.modules_in(tmp_path, KVER, "x.tcz")
    (tmp_path / "lib/b.ko").unlink()
    (base / "net/g.ko.gz").write_bytes(b"")  # tc11's module extensions: gzipped
    assert kernel_package.modules_in(tmp_path, KVER, "x.tcz") == ["net/a.ko", "net/g.ko.gz"]
    (base / "net/c.ko.xz").write_bytes(b"")
    with pytest.raises(StageError, match="compressed other than with gzip"):
        kernel_package.modules_in(tmp_path, KVER, "x.tcz")


def test_names():
    assert kernel_package.kernel_name(f"ipv6-netfilter-{KVER}.tcz", KVER) == "ipv6-netfilter-KERNEL.tcz"
    assert kernel_package.kernel_name("iptables.tcz", KVER) == "iptables.tcz"
    assert kernel_package.module_name("net/netfilter/xt-comment.ko") == "xt_comment"
    assert kernel_package.module_name("net/bridge/br_netfilter.ko.gz") == "br_netfilter"


def test_modules_tarball_is_deterministic_and_root_owned(tmp_path):
    moddir = tmp_path / "modroot/lib/modules" / KVER
    (moddir / "kernel/fs").mkdir(parents=True)
    (moddir / "kernel/fs/a.ko").write_bytes(b"a")
    (moddir / "modules.dep").write_text("kernel/fs/a.ko:\n")
    one = kernel_package.write_modules_tarball(tmp_path / "modroot", tmp_path / "1.tgz", 7)
    two = kernel_package.write_modules_tarball(tmp_path / "modroot", tmp_path / "2.tgz", 7)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(one.read_bytes()))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "lib/modules", f"lib/modules/{KVER}", f"lib/modules/{KVER}/kernel",
        f"lib/modules/{KVER}/kernel/fs", f"lib/modules/{KVER}/kernel/fs/a.ko",
        f"lib/modules/{KVER}/modules.dep"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 7)}


def complete_config(tmp_path, drop: str = "") -> Path:
    lines = ["CONFIG_64BIT=y"]
    for option in kernel.load_options().options:
        if option.name != drop and option.wanted in ("on", "y"):
            lines.append(f"CONFIG_{option.name}=y")
    path = tmp_path / "config"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_full_rebuild_must_meet_every_option(tmp_path):
    assert kernel_package.judge(complete_config(tmp_path), full=True) == {
        "required_missing": [], "recommended_missing": []}
    lacking = complete_config(tmp_path, drop="MEMCG")
    assert kernel_package.judge(lacking, full=False)["recommended_missing"] == ["MEMCG"]
    with pytest.raises(StageError, match="the rebuilt kernel's config misses MEMCG"):
        kernel_package.judge(lacking, full=True)


def test_finish_writes_modules_json(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / ".config").write_text(complete_config(tmp_path).read_text())
    pack = packager(tmp_path, fake_tools())
    outputs = pack.finish(src, False, "linux.txz", "cfg")
    listing = json.loads(outputs["modules.json"].read_text())
    assert listing["kernel_release"] == KVER and listing["kernel"] is None
    assert listing["final_config"] == f"config-{KVER}" and f"config-{KVER}" in outputs


def test_unknown_module_fails_before_anything_runs(tmp_path):
    class Ctx:
        def __init__(self):
            self.recipe = recipe(modules=["zfs"], **BUILDS)
            self.build_root = tmp_path
            self.runner = FakeRunner()

    ctx = Ctx()
    with pytest.raises(StageError, match="no build recipe for zfs"):
        kernel_build.run(ctx, tmp_path / "work")
    assert ctx.runner.calls == []
