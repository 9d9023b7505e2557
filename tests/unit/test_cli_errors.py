"""Bad input and failed writes end in one `error:` line naming the file or flag, exit 2
(usage) or 1 (runtime), never a traceback and never output that looks finished."""

from __future__ import annotations

import errno
import json

import pytest

from appliance import cli, files
from tests import upstream

MINIMAL = '[tinycore]\nmirrors = ["http://127.0.0.1:9/"]\nguest_mirror = "http://10.0.2.2:9/"\n'


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APPLIANCE_OUT", str(tmp_path / "out"))
    recipe = tmp_path / "appliance.toml"
    recipe.write_text(MINIMAL)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_recipe_that_is_not_utf8(where, capsys):
    bad = where / "latin1.toml"
    bad.write_bytes(MINIMAL.encode() + b'name = "caf\xe9"\n')
    code, out, err = run(capsys, "show-config", "-c", str(bad))
    assert code == 2 and out == ""
    assert error_lines(err) == [f"error: {bad}: not UTF-8 text (byte {len(MINIMAL) + 11}): "
                                "TOML files are UTF-8"]


@pytest.mark.parametrize("jobs", ["0", "-1", "many"])
def test_jobs_must_be_a_positive_count(where, capsys, jobs):
    code, out, err = run(capsys, "fetch", "-c", str(where / "appliance.toml"), "-j", jobs)
    assert code == 2 and out == ""
    assert "argument -j/--jobs" in err.splitlines()[-1]


PIN = {"key": "iso", "name": "CorePure64-11.1.iso", "version": "11.1", "url": "http://x/i",
       "sha256": "a" * 64, "md5": None, "trusted": "md5 from x"}


def lock_with(**pin) -> str:
    return json.dumps({"format": 1, "identity": {}, "pins": [{**PIN, **pin}]})


@pytest.mark.parametrize(("text", "what"), [
    ("[]", "top level is a JSON list"),
    (lock_with(sha256=12), "pins[0].sha256 must be a lower-case hex sha256"),
    (lock_with(name="../../etc/passwd"), "pins[0].name '../../etc/passwd' must be a plain"),
    (lock_with(name=".."), "must be a plain file name"),
    (lock_with(md5=["x"]), "pins[0].md5 must be"),
    (lock_with(url=None), "pins[0].url must be a string"),
    ('{"format": 1, "identity": {}, "pins": [7]}', "pins[0] is not an object"),
    ("\xff", "not a valid lock file"),
])
@pytest.mark.parametrize("verb", ["plan", "fetch"])
def test_a_damaged_lock_is_one_error_naming_it(where, capsys, text, what, verb):
    lock = where / "appliance.lock"
    lock.write_text(text, encoding="latin-1")
    code, out, err = run(capsys, verb, "-c", str(where / "appliance.toml"), "--offline")
    assert code == 2 and out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {lock}: not a valid lock file")
    assert what in lines[0]
    assert not (where / "build" / "fetch").exists()


def test_an_image_pin_is_named_by_its_reference(where, capsys):
    from appliance import lock

    data = json.loads(lock_with())
    data["pins"].append({**PIN, "key": "image/ghcr.io/openfaas/gateway:0.27.12",
                         "name": "ghcr.io/openfaas/gateway:0.27.12", "sha256": "b" * 64})
    assert "image/ghcr.io/openfaas/gateway:0.27.12" in lock.parse(data).pins


def test_lock_option_naming_a_folder(where, capsys):
    code, out, err = run(capsys, "plan", "-c", str(where / "appliance.toml"), "--lock",
                         str(where))
    assert code == 2 and out == ""
    assert error_lines(err) == [f"error: {where}: is a folder, not a lock file"]


@pytest.mark.parametrize(("url", "what"), [("http://[::1", "is not a valid URL"),
                                           ("gopher://x/config", "unsupported URL scheme")])
def test_kernel_check_with_a_bad_url(where, capsys, url, what):
    code, out, err = run(capsys, "kernel-check", url)
    assert code == 2 and out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and "kernel-check CONFIG" in lines[0] and what in lines[0]


def test_no_mirror_reachable_names_the_offline_path(where, capsys):
    code, out, err = run(capsys, "lock", "-c", str(where / "appliance.toml"))
    assert code == 1 and out == ""
    assert "failed on every mirror" in err and "`make demo`" in err
    assert not (where / "appliance.lock").exists()


# --- ENOSPC / EACCES at every write of the pipeline's own files ------------------------------


@pytest.fixture
def site(where):
    root = where / "upstream"
    upstream.make_tree(root)
    recipe = where / "site.toml"
    recipe.write_text(upstream.recipe_text(root.as_uri()))
    return recipe


def fail_writes_to(monkeypatch, name: str, code: int) -> None:
    """Every write of `name` through appliance.files fails as a full or read-only disk."""
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and f".{name}." in str(path):
            raise OSError(code, __import__("os").strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", fake_open, raising=False)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_lock_write_fails_cleanly(site, capsys, monkeypatch, code):
    fail_writes_to(monkeypatch, "appliance.lock", code)
    lock = site.with_name("appliance.lock")
    code_, _out, err = run(capsys, "lock", "-c", str(site))
    assert code_ == 1
    assert error_lines(err) == [f"error: {lock}: cannot write: {__import__('os').strerror(code)}"]
    assert "finished" not in err and "wrote" not in err
    assert sorted(p.name for p in site.parent.iterdir() if "lock" in p.name) == []


@pytest.mark.parametrize("name", ["inputs.json", "stamp.json"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_fetch_stage_write_fails_cleanly(site, capsys, monkeypatch, name, code):
    assert run(capsys, "lock", "-c", str(site))[0] == 0
    fail_writes_to(monkeypatch, name, code)
    code_, _out, err = run(capsys, "fetch", "-c", str(site), "--locked")
    assert code_ == 1
    assert len(error_lines(err)) == 1
    assert f"{name}: cannot write: {__import__('os').strerror(code)}" in err
    assert "finished" not in err
    assert not (site.parent / "build" / "fetch").exists()  # nothing that looks done
