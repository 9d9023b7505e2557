"""pipeline.py lock / build --locked / fetch against a file:// upstream made in tmp_path."""

import json
import shutil
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.fetch import sha256_file
from tests import upstream


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An upstream tree, a recipe pointing at it, and private cache/build folders."""
    root = tmp_path / "upstream"
    files = upstream.make_tree(root)
    recipe = tmp_path / "recipe" / "recipe.toml"
    recipe.parent.mkdir()
    recipe.write_text(upstream.recipe_text(root.as_uri()))
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    return {"root": root, "files": files, "recipe": recipe, "lock": recipe.parent / "appliance.lock",
            "tmp": tmp_path}


def run(*argv) -> int:
    return main(list(map(str, argv)))


def cached_files(tmp_path: Path) -> set[str]:
    base = tmp_path / "cache" / "downloads"
    return {p.name for p in base.glob("*/*")} if base.exists() else set()


def test_lock_pins_every_input_from_upstream_checksums(env, capsys):
    assert run("lock", "-c", env["recipe"]) == 0
    data = json.loads(env["lock"].read_text())
    pins = {p["key"]: p for p in data["pins"]}
    assert sorted(pins) == [
        "iso", "release/runc", "tcz/iptables.tcz", "tcz/ipv6-netfilter-5.4.3-tinycore64.tcz",
        "tcz/openssh.tcz", "tcz/openssl-1.1.1.tcz"]
    assert data["extensions"]["order"] == [
        "openssl-1.1.1.tcz", "openssh.tcz", "ipv6-netfilter-5.4.3-tinycore64.tcz", "iptables.tcz"]
    assert pins["iso"]["trusted"].startswith("md5 from file://")
    assert pins["iso"]["trusted"].endswith("/11.x/x86_64/release/CorePure64-11.1.iso.md5.txt")
    assert pins["release/runc"]["trusted"].endswith("releases/runc.sha256sum")
    assert pins["tcz/openssh.tcz"]["trusted"] == (
        f"md5 from {env['root'].as_uri()}/11.x/x86_64/tcz/openssh.tcz.md5.txt")
    for pin in pins.values():
        assert pin["sha256"] == upstream.hashlib.sha256(env["files"][pin["name"]]).hexdigest()
    err = capsys.readouterr().err
    assert "pinned tcz/openssh.tcz: sha256 " in err  # every pin is printed with its source


def test_locked_build_fetches_and_then_skips(env, capsys):
    run("lock", "-c", env["recipe"])
    assert run("build", "-c", env["recipe"], "--locked", "--until", "fetch") == 0
    listing = json.loads((env["tmp"] / "build" / "fetch" / "inputs.json").read_text())
    assert set(listing["inputs"]) >= {"iso", "tcz/openssh.tcz", "release/runc"}
    for item in listing["inputs"].values():
        assert sha256_file(Path(item["path"])) == item["sha256"]
    capsys.readouterr()
    assert run("fetch", "-c", env["recipe"], "--locked") == 0
    assert "fetch: up to date, skipped" in capsys.readouterr().err


def test_locked_without_lock_is_refused(env, capsys):
    assert run("build", "-c", env["recipe"], "--locked") == 2
    err = capsys.readouterr().err
    assert f"error: {env['lock']}: no lock file, and --locked refuses unpinned inputs" in err
    assert cached_files(env["tmp"]) == set()


def test_missing_checksum_under_locked(env, capsys):
    run("lock", "-c", env["recipe"])
    data = json.loads(env["lock"].read_text())
    data["pins"] = [p for p in data["pins"] if p["key"] != "tcz/openssl-1.1.1.tcz"]
    env["lock"].write_text(json.dumps(data))
    capsys.readouterr()
    assert run("build", "-c", env["recipe"], "--locked") == 2
    err = capsys.readouterr().err
    assert f"error: {env['lock']} is out of date with the recipe:\n" \
           "  tcz/openssl-1.1.1.tcz: no sha256 pinned\n" in err


def test_stale_lock_is_reported_not_used(env, capsys):
    run("lock", "-c", env["recipe"])
    site = env["tmp"] / "site.toml"
    site.write_text('[tinycore]\nextensions = ["openssh"]\n')
    capsys.readouterr()
    assert run("build", "-c", env["recipe"], "-c", site, "--locked") == 2
    err = capsys.readouterr().err
    assert "is out of date with the recipe:\n  tinycore.extensions: lock has ['openssh', " \
           "'iptables'], recipe has ['openssh']" in err


def test_locked_refuses_bytes_that_changed_upstream(env, capsys):
    run("lock", "-c", env["recipe"])
    tcz = env["root"] / "11.x" / "x86_64" / "tcz" / "openssh.tcz"
    upstream.write_with_md5(tcz, b"tampered")  # md5.txt updated too: only the lock knows
    for entry in (env["tmp"] / "cache" / "downloads").glob("*/openssh.tcz"):
        entry.unlink()
    capsys.readouterr()
    assert run("fetch", "-c", env["recipe"], "--locked") == 1
    err = capsys.readouterr().err
    good = upstream.hashlib.sha256(env["files"]["openssh.tcz"]).hexdigest()
    bad = upstream.hashlib.sha256(b"tampered").hexdigest()
    assert good in err and bad in err
    assert not (env["tmp"] / "cache" / "downloads" / bad).exists()


def test_unlocked_build_without_lock_resolves_and_says_so(env, capsys):
    assert run("fetch", "-c", env["recipe"]) == 0
    err = capsys.readouterr().err
    assert "does not exist; resolving pins from upstream checksum files" in err
    assert not env["lock"].exists()  # resolving is not writing


def test_offline_uses_the_cache_and_names_what_is_missing(env, capsys, tmp_path, monkeypatch):
    run("lock", "-c", env["recipe"])
    shutil.rmtree(env["tmp"] / "cache" / "downloads")  # locking downloaded them
    assert run("fetch", "-c", env["recipe"], "--locked", "--offline") == 1
    err = capsys.readouterr().err
    assert "not in the download cache" in err and "--offline" in err
    assert run("fetch", "-c", env["recipe"], "--locked") == 0
    (env["tmp"] / "build").rename(env["tmp"] / "build.old")
    assert run("fetch", "-c", env["recipe"], "--locked", "--offline") == 0


def test_plan_reports_a_missing_lock(env, capsys):
    assert run("plan", "-c", env["recipe"]) == 0
    out = capsys.readouterr().out
    assert "does not exist; `build` would resolve pins first" in out
    assert "fetch: would run (no previous build)" in out
    assert "kernel: nothing to do" in out
    assert "extensions: would run (no previous build)" in out


def test_build_of_the_whole_pipeline_stops_at_the_first_stage_that_cannot_run(env, capsys):
    run("lock", "-c", env["recipe"])
    capsys.readouterr()
    assert run("build", "-c", env["recipe"], "--locked") == 1
    err = capsys.readouterr().err
    assert "kernel: nothing to do" in err
    # this recipe builds no overlay.ko, which faasd.tcz cannot do without
    assert "error: extensions: faasd.tcz needs kernel module 'overlay'" in err


def test_kernel_inputs_are_pinned_only_when_the_kernel_stage_builds(env, capsys):
    run("lock", "-c", env["recipe"])
    assert not any(p["key"].startswith("kernel/")
                   for p in json.loads(env["lock"].read_text())["pins"])
    site = env["tmp"] / "kernel.toml"
    site.write_text('[kernel]\nconfig = "release/src/kernel/config-5.4.3-tinycore64"\n'
                    'source = "release/src/kernel/linux-5.4.3-patched.txz"\nmodules = ["overlay"]\n')
    capsys.readouterr()
    assert run("build", "-c", env["recipe"], "-c", site, "--locked", "--until", "fetch") == 2
    assert "kernel.kernel/source: lock has None" in capsys.readouterr().err  # stale, not used
    assert run("lock", "-c", env["recipe"], "-c", site) == 0
    err = capsys.readouterr().err
    pins = {p["key"]: p for p in json.loads(env["lock"].read_text())["pins"]}
    assert pins["kernel/config"]["trusted"].endswith("config-5.4.3-tinycore64.md5.txt")
    assert pins["kernel/source"]["trusted"] == "trusted on first download (no upstream checksum file)"
    assert "kernel/source: no linux-5.4.3-patched.txz.md5.txt on the mirror" in err
    assert run("lock", "-c", env["recipe"], "-c", site, "--accept-first-use") == 0
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 0


def test_a_pin_the_recipe_does_not_use_is_a_lock_error():
    from appliance import config
    from appliance.errors import LockError
    from appliance.fetch import Fetcher
    from appliance.lock import Lock, Pin, downloads, identity
    from appliance.paths import REPO

    recipe = config.load([REPO / "tests" / "data" / "minimal.toml"]).recipe
    for key in ("release/gone", "kernel/config", "odd"):
        lock = Lock(identity(recipe), {key: Pin(key, "f", "1", "http://x/f", "a" * 64)})
        with pytest.raises(LockError, match=f"the lock pins '{key}', which is not an input"):
            downloads(recipe, lock, Fetcher(offline=True))


def kernel_site(env) -> Path:
    site = env["tmp"] / "kernel.toml"
    site.write_text('[kernel]\nconfig = "release/src/kernel/config-5.4.3-tinycore64"\n'
                    'source = "release/src/kernel/linux-5.4.3-patched.txz"\nmodules = ["overlay"]\n')
    return site


def test_first_use_pins_are_marked_printed_and_refused_until_accepted(env, capsys):
    site = kernel_site(env)
    assert run("lock", "-c", env["recipe"], "-c", site) == 0
    data = json.loads(env["lock"].read_text())
    marked = {p["key"] for p in data["pins"] if p["first_use"]}
    assert marked == {"kernel/source"}  # file:// md5 files and runc's sha256sum vouch for the rest
    assert data["first_use_accepted"] == {}
    err = capsys.readouterr().err.splitlines()
    source = {p["key"]: p for p in data["pins"]}["kernel/source"]
    block = err[err.index("first-use pins (1): nothing independent vouched for these bytes; "
                          "review before committing the lock"):]
    assert block[1:] == [
        "  kernel/source  [NOT accepted]", f"    sha256 {source['sha256']}",
        f"    from {source['url']}", "    trusted on first download (no upstream checksum file)",
        "`build --locked` refuses them until a person runs "
        "`python pipeline.py lock --accept-first-use`"]
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 2
    err = capsys.readouterr().err
    assert f"error: {env['lock']} has first-use pins that no person accepted:\n" \
           f"  kernel/source: sha256 {source['sha256']} (trusted on first download" in err
    assert run("lock", "-c", env["recipe"], "-c", site, "--accept-first-use") == 0
    accepted = json.loads(env["lock"].read_text())["first_use_accepted"]
    assert accepted == {"kernel/source": source["sha256"]}
    assert "  kernel/source  [accepted]" in capsys.readouterr().err
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 0


def test_an_acceptance_holds_for_the_same_bytes_only(env, capsys):
    site = kernel_site(env)
    run("lock", "-c", env["recipe"], "-c", site, "--accept-first-use")
    run("lock", "-c", env["recipe"], "-c", site)  # a re-lock: same bytes, still accepted
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 0
    src = env["root"] / "11.x" / "x86_64" / "release" / "src" / "kernel"
    (src / "linux-5.4.3-patched.txz").write_bytes(b"another tarball")
    run("lock", "-c", env["recipe"], "-c", site)
    assert json.loads(env["lock"].read_text())["first_use_accepted"] == {}
    capsys.readouterr()
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 2
    assert "has first-use pins that no person accepted" in capsys.readouterr().err


def test_lock_check_fails_on_a_stale_lock_and_writes_nothing(env, capsys):
    run("lock", "-c", env["recipe"])
    before = env["lock"].read_text()
    assert run("lock", "-c", env["recipe"], "--check") == 0
    tcz = env["root"] / "11.x" / "x86_64" / "tcz" / "openssh.tcz"
    upstream.write_with_md5(tcz, b"a new build of openssh")
    capsys.readouterr()
    assert run("lock", "-c", env["recipe"], "--check") == 1
    err = capsys.readouterr().err
    new = upstream.hashlib.sha256(b"a new build of openssh").hexdigest()
    assert f"error: {env['lock']} is stale:\n  tcz/openssh.tcz: lock has " in err and new in err
    assert env["lock"].read_text() == before


def test_a_lock_from_before_the_marking_is_judged_by_its_trusted_text(env, capsys):
    site = kernel_site(env)
    run("lock", "-c", env["recipe"], "-c", site, "--accept-first-use")
    data = json.loads(env["lock"].read_text())
    for pin in data["pins"]:
        del pin["first_use"]
    del data["first_use_accepted"]
    env["lock"].write_text(json.dumps(data))
    capsys.readouterr()
    assert run("fetch", "-c", env["recipe"], "-c", site, "--locked") == 2
    assert "  kernel/source: sha256 " in capsys.readouterr().err


def test_lock_check_names_a_recipe_change(env, capsys):
    run("lock", "-c", env["recipe"])
    site = env["tmp"] / "site.toml"
    site.write_text('[tinycore]\nextensions = ["openssh"]\n')
    capsys.readouterr()
    assert run("lock", "-c", env["recipe"], "-c", site, "--check") == 1
    assert "  tinycore.extensions: lock has ['openssh', 'iptables'], recipe has ['openssh']" \
        in capsys.readouterr().err
