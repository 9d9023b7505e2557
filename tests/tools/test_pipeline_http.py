"""`pipeline.py lock` and `fetch` as a user runs them, against a loopback HTTP mirror."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from appliance.paths import REPO
from tests import upstream

pytestmark = pytest.mark.tools


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "upstream"
    upstream.make_tree(root)
    with upstream.serve(root) as base_url:
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(upstream.recipe_text(base_url))
        env = {**os.environ, "APPLIANCE_CACHE": str(tmp_path / "cache"),
               "APPLIANCE_BUILD": str(tmp_path / "build")}
        yield {"recipe": recipe, "env": env, "tmp": tmp_path, "url": base_url}


def pipeline(site, *args, **kw):
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), *args], env=site["env"],
                          capture_output=True, text=True, timeout=120, **kw)


def test_lock_then_locked_fetch_over_http(site):
    locked = pipeline(site, "lock", "-c", str(site["recipe"]))
    assert locked.returncode == 0, locked.stderr
    md5_url = f"{site['url']}/11.x/x86_64/tcz/openssh.tcz.md5.txt"
    assert f"md5 from {md5_url} (over plain http: no better than the download itself)" \
        in locked.stderr
    # checksums over plain http vouch for nothing: every pin is first use, printed at the end
    block = locked.stderr[locked.stderr.index("first-use pins (6): "):].splitlines()
    assert block[0].endswith("review before committing the lock")
    assert "  tcz/openssh.tcz  [NOT accepted]" in block
    assert block[-1] == ("`build --locked` refuses them until a person runs "
                         "`python pipeline.py lock --accept-first-use`")
    refused = pipeline(site, "fetch", "-c", str(site["recipe"]), "--locked")
    assert refused.returncode == 2 and "no person accepted" in refused.stderr
    accepted = pipeline(site, "lock", "-c", str(site["recipe"]), "--accept-first-use")
    assert accepted.returncode == 0 and "  tcz/openssh.tcz  [accepted]" in accepted.stderr
    fetched = pipeline(site, "fetch", "-c", str(site["recipe"]), "--locked")
    assert fetched.returncode == 0, fetched.stderr
    listing = json.loads((site["tmp"] / "build" / "fetch" / "inputs.json").read_text())
    assert listing["extension_order"][-1] == "iptables.tcz"
    assert len(listing["inputs"]) == 6
    again = pipeline(site, "fetch", "-c", str(site["recipe"]), "--locked")
    assert "fetch: up to date, skipped" in again.stderr


def test_plan_and_doctor_run(site):
    plan = pipeline(site, "plan", "-c", str(site["recipe"]))
    assert plan.returncode == 0 and "fetch: would run" in plan.stdout
    doctor = pipeline(site, "doctor")
    assert "accelerator" in doctor.stdout and "packer" in doctor.stdout


def wait_for(predicate, timeout_s: float, what: str):
    """Poll an observable state (never a fixed sleep); fail naming it."""
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


@pytest.mark.parametrize(("sig", "said"), [
    (signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM"),
    (signal.SIGHUP, "stopped by SIGHUP")])
def test_a_signal_during_a_download_leaves_no_finished_looking_stage(site, sig, said):
    """Ctrl-C, SIGTERM (CI timeouts, `timeout make image`) and SIGHUP while downloading:
    exit 128+signal, no build/fetch/ stamp, only a resumable .part."""
    slow = site["tmp"] / "slow.toml"
    slow.write_text(
        f'[releases.slow]\nversion = "1"\nurl = "{site["url"]}/slow/big.bin"\n')
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "pipeline.py"), "fetch", "-c", str(site["recipe"]),
         "-c", str(slow)], env=site["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    cache = site["tmp"] / "cache" / "downloads"
    part = wait_for(lambda: [p for p in (cache / ".partial").glob("*-big.bin.part")
                             if p.stat().st_size > 0], 60, "big.bin's .part file")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"{said}; finished stages and cached downloads are kept" in err
    assert "Traceback" not in err and "finished (" not in err
    assert not (site["tmp"] / "build" / "fetch").exists()
    assert part[0].stat().st_size > 0  # resumable
    assert not list(cache.glob("*/big.bin"))  # never a half file in the cache
