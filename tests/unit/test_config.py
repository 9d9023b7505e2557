"""Recipe loading: golden error messages, overlays, defaults."""

import json
from pathlib import Path

import pytest

from appliance import config
from appliance.cli import main
from appliance.errors import ConfigError
from appliance.paths import REPO

MINIMAL = """
[tinycore]
mirrors = ["http://127.0.0.1:9/"]
guest_mirror = "http://10.0.2.2:9/"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(*paths: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(list(paths))
    return info.value.problems


def test_default_recipe_is_valid():
    loaded = config.load([REPO / "appliance.toml"])
    recipe = loaded.recipe
    assert recipe.tinycore.iso_name == "CorePure64-11.1.iso"
    assert recipe.tinycore.release_dir == "11.x"
    assert recipe.services == ["containerd", "faasd"]
    assert recipe.releases["containerd"].filename == "containerd-static-1.7.27-linux-amd64.tar.gz"
    assert recipe.releases["cni-plugins"].resolved_checksum_url().endswith("v0.9.1.tgz.sha256")
    assert loaded.default_lock_path == REPO / "appliance.lock"


def test_unknown_key(tmp_path):
    path = write(tmp_path, "r.toml", MINIMAL + "\n[vm]\ncpu = 2\n")
    assert problems(path) == [
        f"{path}: vm.cpu: unknown key (check the spelling; see the recipe reference in README.md)"
    ]


def test_wrong_type(tmp_path):
    path = write(tmp_path, "r.toml", MINIMAL + '\n[vm]\nmemory_mb = "2048"\n')
    assert problems(path) == [f'{path}: vm.memory_mb: Input should be a valid integer (got str "2048")']


def test_bad_url(tmp_path):
    path = write(tmp_path, "r.toml", MINIMAL.replace("http://127.0.0.1:9/", "ftp://mirror/"))
    assert problems(path) == [
        f"{path}: tinycore.mirrors[0]: 'ftp://mirror/' is not a valid URL "
        "(expected http://, https:// or file://, no spaces or quotes)"
    ]


@pytest.mark.parametrize("code, shown", [("waitusb=5\\nrm", '"waitusb=5\\nrm"'),
                                         ('host=a\\"b', '"host=a\\"b"'),
                                         ("two words", '"two words"')])
def test_bad_boot_code(tmp_path, code, shown):
    path = write(tmp_path, "r.toml", MINIMAL + f'\n[boot]\nlive = ["cde", "{code}"]\n')
    assert problems(path) == [
        f"{path}: boot.live[1]: boot code {shown} is not a safe token: it must match "
        "^[A-Za-z0-9][A-Za-z0-9._:/=,@+-]*$ (no spaces, quotes or newlines; "
        "list each code as its own string)"
    ]


@pytest.mark.parametrize("field, code, taken_for", [
    ("disk", "hostname=x", "host"), ("live", "options=1", "opt"),
    ("disk", "username=y", "user"), ("live", "tzdata=UTC", "tz"),
    ("disk", "restore_from=sda1", "restore"), ("live", "isolinux=1", "iso"),
])
def test_boot_code_misread_by_prefix_is_refused(tmp_path, field, code, taken_for):
    path = write(tmp_path, "r.toml", MINIMAL + f'\n[boot]\n{field} = ["{code}"]\n')
    assert problems(path) == [
        f"{path}: boot.{field}[0]: '{code}' would be read by Tiny Core's tc-config as "
        f"'{taken_for}' (it matches boot codes by prefix, `{taken_for}*`); use "
        f"'{taken_for}=...' if that is meant, else drop the code"
    ]


def test_exact_prefix_codes_and_flags_are_accepted(tmp_path):
    codes = ["host=x", "user=tc", "opt=sda1", "tz=UTC", "home=LABEL=data", "noicons=1",
             "swapfile=sda1", "hostflag", "restore=sr0", "waitusb=5:LABEL=x"]
    path = write(tmp_path, "r.toml", MINIMAL + f"\n[boot]\ndisk = {json.dumps(codes)}\n")
    assert config.load([path]).recipe.boot.disk == codes


def test_noembed_refused_on_live_and_cde_on_disk(tmp_path):
    path = write(tmp_path, "r.toml", MINIMAL + '\n[boot]\nlive = ["noembed"]\ndisk = ["cde"]\n')
    found = problems(path)
    assert len(found) == 2
    assert found[0].startswith(f"{path}: boot.live: noembed does not belong on the live ISO")
    assert found[1] == f"{path}: boot.disk: cde loads extensions from the CD; the installed system has none"


def test_all_problems_reported_at_once_with_the_file_that_set_them(tmp_path):
    base = write(tmp_path, "base.toml", MINIMAL)
    site = write(tmp_path, "site.toml", '[vm]\ncpus = 0\n[install]\nmode = "usb"\ncolour = 1\n')
    found = problems(base, site)
    assert len(found) == 3
    assert all(p.startswith(f"{site}: ") for p in found)
    assert any("vm.cpus" in p for p in found)
    assert any("install.mode" in p and "'traditional' or 'frugal'" in p for p in found)
    assert f"{site}: install.colour: unknown key (check the spelling; see the recipe reference in README.md)" in found


def test_overlay_of_two_files(tmp_path):
    base = write(tmp_path, "base.toml", MINIMAL + '\n[vm]\ncpus = 1\nmemory_mb = 1024\n')
    site = write(tmp_path, "site.toml", '[vm]\ncpus = 2\n[tinycore]\nextensions = ["openssh"]\n')
    recipe = config.load([base, site]).recipe
    assert recipe.vm.cpus == 2  # overridden
    assert recipe.vm.memory_mb == 1024  # kept from base
    assert recipe.tinycore.extensions == ["openssh"]
    assert recipe.tinycore.mirrors == ["http://127.0.0.1:9/"]


def test_lists_replace_rather_than_append(tmp_path):
    base = write(tmp_path, "base.toml", MINIMAL + '\n[boot]\nlive = ["cde", "waitusb=5"]\n')
    site = write(tmp_path, "site.toml", '[boot]\nlive = ["cde"]\n')
    assert config.load([base, site]).recipe.boot.live == ["cde"]


def test_missing_file_and_bad_toml(tmp_path):
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: recipe file not found"]
    bad = write(tmp_path, "bad.toml", "[tinycore\n")
    assert problems(bad)[0].startswith(f"{bad}: not valid TOML")


def test_release_url_placeholders(tmp_path):
    text = MINIMAL + '\n[releases.x]\nversion = "1.0"\nurl = "https://h/{tag}/x"\n'
    found = problems(write(tmp_path, "r.toml", text))
    assert found == [f"{tmp_path / 'r.toml'}: releases.x.url: unknown placeholder {{tag}} in "
                     "'https://h/{tag}/x' (allowed: {version}, and {url} in checksum_url)"]


def test_source_date_epoch_env_overrides(tmp_path, monkeypatch):
    recipe = config.load([write(tmp_path, "r.toml", MINIMAL)]).recipe
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert recipe.effective_source_date_epoch() == config.DEFAULT_SOURCE_DATE_EPOCH
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    assert recipe.effective_source_date_epoch() == 1600000000


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path, "r.toml", "bogus = 1\n" + MINIMAL)
    assert main(["show-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: {path}: bogus: unknown key" in err


def test_show_config_prints_resolved_json(tmp_path, capsys):
    base = write(tmp_path, "base.toml", MINIMAL)
    site = write(tmp_path, "site.toml", "[vm]\ncpus = 3\n")
    assert main(["show-config", "-c", str(base), "-c", str(site)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["vm"]["cpus"] == 3
    assert data["tinycore"]["guest_mirror"] == "http://10.0.2.2:9/"


def test_restore_sources_outside_the_recipe_folder_are_warned_about(tmp_path, capsys):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "motd").write_text("hi\n")
    (tmp_path / "secret").write_text("x\n")
    restore = ('\n[[restore]]\nsource = "motd"\npath = "etc/motd"\n'
               '\n[[restore]]\nsource = "sub/../motd"\npath = "etc/motd2"\n'
               '\n[[restore]]\nsource = "../secret"\npath = "etc/a"\n'
               f'\n[[restore]]\nsource = "{tmp_path / "secret"}"\npath = "etc/b"\n')
    recipe_file = write(tmp_path / "site", "r.toml", MINIMAL + restore)
    config.load([recipe_file])
    err = capsys.readouterr().err.splitlines()
    outside = tmp_path.resolve() / "secret"
    assert err == [f"warning: {recipe_file}: restore[{i}].source: {outside} is outside the "
                   f"recipe's folder {recipe_file.parent.resolve()}; it goes into the ISO's "
                   "mydata.tgz (keep restore sources beside the recipe)" for i in (2, 3)]


def test_the_default_mirrors_try_https_first():
    mirrors = config.load([REPO / "appliance.toml"]).recipe.tinycore.mirrors
    schemes = [m.split("://")[0] for m in mirrors]
    assert schemes[:2] == ["https", "https"]
    assert schemes == sorted(schemes, key=lambda s: s != "https")  # http only as fallback
