"""The remaster stage around the ISO code: recipe fields, the build key, inputs from earlier
stages (fetch only, or the extensions stage's extensions.json), outputs and the stage key."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance import config, keys
from appliance.errors import ConfigError
from appliance.fetch import sha256_file
from appliance.lock import Lock
from appliance.stages.remaster import stage as iso_remaster
from tests.fakes import FakeRunner
from tests.unit.test_remaster import HASH, Opened, tiny_core_iso

BASE = """
[tinycore]
mirrors = ["http://127.0.0.1:9/"]
guest_mirror = "http://10.0.2.2:9/"
extensions = ["openssh"]
"""
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake "


def recipe_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "recipe" / "appliance.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(extra + BASE)  # top-level keys before the first table
    return path


def problems(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as err:
        config.load([recipe_file(tmp_path, extra)])
    return "\n".join(err.value.problems)


# --- recipe fields ---------------------------------------------------------------------------


def test_defaults(tmp_path):
    r = config.load([recipe_file(tmp_path)]).recipe
    assert (r.hostname, r.ready_timeout, r.tc_password_hash, r.restore) == (
        "tc-appliance", 600, None, [])
    assert r.live.onboot == ["openssh", "e2fsprogs", "syslinux"]


def test_a_plain_password_is_refused_and_never_shown(tmp_path):
    shown = problems(tmp_path, 'tc_password_hash = "hunter2-secret"\n')
    assert "tc_password_hash: must be a SHA-512 crypt hash" in shown
    assert "hunter2" not in shown
    md5 = problems(tmp_path, 'tc_password_hash = "$1$salt$qJH7.N4xYta3aEG/dfqo/0"\n')
    assert "must be a SHA-512 crypt hash" in md5 and "qJH7" not in md5
    ok = config.load([recipe_file(tmp_path, f'tc_password_hash = "{HASH}"\n')]).recipe
    assert ok.tc_password_hash == HASH


@pytest.mark.parametrize("line, message", [
    ('hostname = "bad_name"', "not a valid host name"),
    ('hostname = "-x"', "not a valid host name"),
    ("ready_timeout = 5", "greater than or equal to 10"),
    ('[live]\nonboot = ["e2fsprogs"]', "must include openssh"),
    ('[live]\ninstall_only = ["iptables"]', "install_only: iptables not in live.onboot"),
    ('[live]\ninstall_only = ["openssh"]', "install_only: openssh is how the appliance is reached"),
    ('[[restore]]\nsource = "x"\npath = "/etc/x"', "not a plain relative path"),
    ('[[restore]]\nsource = "x"\npath = "opt/bootsync.sh"', "the appliance's own boot script"),
    ('[[restore]]\nsource = "x"\npath = "etc/x"\nowner = "nobody"', "restore[0].owner"),
    ('[[restore]]\nsource = "x"\npath = "etc/x"\nmode = 0o10000', "restore[0].mode"),
])
def test_field_errors(tmp_path, line, message):
    assert message in problems(tmp_path, line + "\n")


@pytest.mark.parametrize("code", ["restore=sda1", "norestore"])
def test_restore_entries_refuse_a_live_code_that_misses_the_cd(tmp_path, code):
    shown = problems(tmp_path, f'[boot]\nlive = ["cde", "{code}"]\n'
                               '[[restore]]\nsource = "x"\npath = "etc/x"\n')
    assert f"boot.live: '{code}'" in shown


@pytest.mark.parametrize("live, has_restore, expected", [
    (["cde"], True, ["cde", "restore=sr0"]),
    (["cde", "restore=sr0"], True, ["cde", "restore=sr0"]),
    (["cde"], False, ["cde"]),
])
def test_live_codes_get_restore_sr0_with_restore_entries(live, has_restore, expected):
    assert config.live_codes_with_restore(live, has_restore) == expected


def test_restore_sources_are_relative_to_the_recipe_file(tmp_path):
    path = recipe_file(tmp_path, '[[restore]]\nsource = "site/motd"\npath = "etc/motd"\n')
    loaded = config.load([path])
    assert loaded.recipe.restore[0].source == str(path.parent.resolve() / "site" / "motd")
    assert loaded.recipe.restore[0].effective_owner == "root"


# --- the build key ---------------------------------------------------------------------------


def fake_keygen(argv: list[str]) -> tuple[int, str]:
    target = Path(argv[argv.index("-f") + 1])
    target.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n")
    target.with_name(target.name + ".pub").write_text(PUBLIC + "tc-appliance-build\n")
    return 0, ""


def test_build_key_is_made_once_0600_and_reused(tmp_path):
    runner = FakeRunner(fake_keygen)
    private, public = keys.build_key(tmp_path / "keys", runner)
    assert public.startswith("ssh-ed25519 ") and private == tmp_path / "keys" / "build_ed25519"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert runner.calls == [keys.keygen_argv(tmp_path / "keys" / f".build_ed25519.{os.getpid()}")]
    private.chmod(0o644)
    again = keys.build_key(tmp_path / "keys", runner)
    assert again == (private, public) and len(runner.calls) == 1
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "build_ed25519", "build_ed25519.pub"]


# --- the stage -------------------------------------------------------------------------------


def stamp(build_root: Path, stage: str, outputs: dict[str, Path]) -> None:
    folder = build_root / stage
    folder.mkdir(parents=True, exist_ok=True)
    described = {k: {"path": str(p), "sha256": sha256_file(p), "size": p.stat().st_size}
                 for k, p in outputs.items()}
    (folder / "stamp.json").write_text(json.dumps({"outputs": described}))


def tcz(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(name.encode() * 999)
    return folder / name


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    site = tmp_path / "recipe" / "site"
    site.mkdir(parents=True)
    (site / "motd").write_text("hello\n")
    loaded = config.load([recipe_file(tmp_path, f"""
hostname = "unit"
services = ["containerd"]
tc_password_hash = "{HASH}"
[live]
onboot = ["openssh"]
[[restore]]
source = "site/motd"
path = "etc/motd"
""")])
    build_root = tmp_path / "build"
    fetched = tmp_path / "downloads"
    stamp(build_root, "fetch", {
        "iso": tiny_core_iso(tmp_path / "CorePure64-11.1.iso"),
        "tcz/openssl.tcz": tcz(fetched, "openssl.tcz"),
        "tcz/openssh.tcz": tcz(fetched, "openssh.tcz"),
    })
    lock = Lock({}, {}, ["openssl.tcz", "openssh.tcz"], {"openssh.tcz": ["openssl.tcz"],
                                                         "openssl.tcz": []})
    return SimpleNamespace(recipe=loaded.recipe, lock=lock, runner=FakeRunner(fake_keygen),
                           build_root=build_root)


def test_stage_from_the_fetch_stage_alone(ctx, tmp_path, monkeypatch):
    ctx.active_stages = ("fetch", "remaster")
    work = tmp_path / "build" / "remaster.tmp"
    work.mkdir(parents=True)
    out = iso_remaster.run(ctx, work)
    assert sorted(out) == ["iso", "iso.sha256"]
    assert out["iso"] == work / "appliance-0.1.0.iso"
    assert out["iso.sha256"].read_text() == f"{sha256_file(out['iso'])}  appliance-0.1.0.iso\n"
    iso = Opened(out["iso"])
    assert iso.read("/cde/onboot.lst") == b"openssl.tcz\nopenssh.tcz\n"
    assert iso.read("/cde/optional/openssh.tcz.dep") == b"openssl.tcz\n"
    assert iso.names("/") == ["boot", "cde", "mydata.tgz"]
    # the restore scan skips CD drives (tc_noscan.lst): only restore=sr0 finds mydata.tgz
    assert " restore=sr0 " in iso.read("/boot/isolinux/isolinux.cfg").decode()
    members = iso.members("/boot/build.gz")
    key = (tmp_path / "cache" / "keys" / "build_ed25519.pub").read_text().strip()
    assert members["home/tc/.ssh/authorized_keys"].data == f"{key}\n".encode()
    assert not any(b"PRIVATE KEY" in iso.read(f"/boot/{n}") for n in ("appliance.gz", "build.gz"))
    assert sorted(p.name for p in work.iterdir()) == ["appliance-0.1.0.iso",
                                                      "appliance-0.1.0.iso.sha256"]


def test_stage_takes_the_extensions_stage_listing(ctx, tmp_path, monkeypatch):
    ctx.active_stages = ("fetch", "extensions", "remaster")
    built = tmp_path / "build" / "extensions"
    ours = tcz(built, "containerd.tcz")
    (built / "containerd.tcz.dep").write_text("iptables.tcz\nnet-bridging-KERNEL.tcz\n")
    fetched = {n: tmp_path / "downloads" / n for n in ("openssl.tcz", "openssh.tcz")}
    listing = {"order": ["openssl.tcz", "openssh.tcz", "containerd.tcz"], "extensions": {
        "openssl.tcz": {"path": str(fetched["openssl.tcz"]), "deps": [], "source": "tinycore"},
        "openssh.tcz": {"path": str(fetched["openssh.tcz"]), "deps": ["openssl.tcz"]},
        "containerd.tcz": {"path": "containerd.tcz", "deps": [], "source": "overlay",
                           "md5": hashlib.md5(ours.read_bytes()).hexdigest()}}}
    (built / "extensions.json").write_text(json.dumps(listing))
    stamp(tmp_path / "build", "extensions", {
        "extensions.json": built / "extensions.json", "containerd.tcz": ours,
        "containerd.tcz.dep": built / "containerd.tcz.dep"})
    work = tmp_path / "w"
    work.mkdir()
    iso = Opened(iso_remaster.run(ctx, work)["iso"])
    assert iso.read("/cde/onboot.lst") == b"openssl.tcz\nopenssh.tcz\n"  # not containerd
    assert iso.read("/cde/optional/containerd.tcz") == ours.read_bytes()
    # a built .dep is copied as written (Tiny Core's -KERNEL spelling)
    assert iso.read("/cde/optional/containerd.tcz.dep") == b"iptables.tcz\nnet-bridging-KERNEL.tcz\n"


def test_listing_md5_mismatch_is_an_error(ctx, tmp_path, monkeypatch):
    ctx.active_stages = ("fetch", "extensions", "remaster")
    built = tmp_path / "build" / "extensions"
    ours = tcz(built, "containerd.tcz")
    (built / "extensions.json").write_text(json.dumps({"order": ["containerd.tcz"], "extensions": {
        "containerd.tcz": {"path": "containerd.tcz", "deps": [], "md5": "0" * 32}}}))
    stamp(tmp_path / "build", "extensions", {"extensions.json": built / "extensions.json",
                                             "containerd.tcz": ours})
    with pytest.raises(Exception, match="does not match"):
        iso_remaster.inputs_from(ctx)


def test_stage_key_has_no_password_hash_and_follows_restore_contents(ctx, tmp_path):
    sliced = iso_remaster.key_slice(ctx.recipe)
    assert HASH not in json.dumps(sliced)
    assert sliced["tc_password_hash"] == hashlib.sha256(HASH.encode()).hexdigest()
    (tmp_path / "recipe" / "site" / "motd").write_text("changed\n")
    assert iso_remaster.key_slice(ctx.recipe)["restore"] != sliced["restore"]
    extra = iso_remaster.extra_key(ctx)
    assert extra == iso_remaster.extra_key(ctx)  # the key is made once, then reused
    assert set(extra) == {"build_key", "deps"}


@pytest.mark.parametrize(("top", "boot"), [
    ("", ["cde", "waitusb=5", "noautologin"]),  # the default: a login prompt on the console
    ("console_autologin = true\n", ["cde", "waitusb=5"]),  # Tiny Core's autologin of tc
])
def test_the_live_boot_line_asks_for_a_console_login_unless_switched_off(tmp_path, top, boot):
    recipe = config.load([recipe_file(tmp_path, top)]).recipe
    assert recipe.live_boot_codes() == boot
    assert iso_remaster.key_slice(recipe)["boot"] == boot  # switching rebuilds the ISO
