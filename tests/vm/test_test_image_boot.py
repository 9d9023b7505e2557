"""test-image boots a disk twice and judges it by the appliance's markers and /healthz.

The disks are the appliance double of tests/vm/appliance_double.py (the cached stand-in
kernel and userland, with a bootlocal.sh that plays the appliance), so this runs offline
in about a minute of boots. Each way test-image could go wrong has a disk that catches it:
  persist    must PASS on two boots, and the deliverable must not change
  firstboot  says READY only when its disk carries no state from an earlier boot: it must
             FAIL at boot 2, which it does only if boot 2 runs on boot 1's overlay
  nohealth   says READY but serves no /healthz: it must FAIL at boot 1
"""

from __future__ import annotations

import hashlib

import pytest

from appliance import cli
from appliance.vm import boot_check
from tests.vm.appliance_double import build_double

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

# The double is ready in seconds; it has no acpid (the stand-in kernel has no evdev), so
# every power-off ends with QEMU being stopped after --shutdown-timeout.
ARGS = ["--memory", "512", "--timeout", "240", "--shutdown-timeout", "5"]


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_BUILD", str(tmp_path / "build"))
    return tmp_path / "build"


def test_a_disk_ready_on_both_boots_passes(tmp_path, build, capsys):
    image = build_double("persist", tmp_path)
    capsys.readouterr()  # the stand-in build's own output
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert cli.main(["test-image", str(image), *ARGS]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"test-image: PASS {image} (boot 1: "), out + err
    assert ", boot 2: " in out and "2 ACPI power-off(s) ignored, QEMU stopped" in out
    for n in (1, 2):
        assert f"boot {n}: ready after" in err and f"boot {n}: GET /healthz -> 200" in err
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest
    assert not list(build.glob("test-image-*"))


def test_a_disk_not_ready_at_the_second_boot_fails(tmp_path, build, capsys):
    image = build_double("firstboot", tmp_path)
    capsys.readouterr()  # the stand-in build's own output
    assert cli.main(["test-image", str(image), *ARGS]) == 1
    out, err = capsys.readouterr()
    kept = build / "logs" / "test-image" / f"{image.name}.boot2-serial.log"
    assert out == (f"test-image: FAIL {image}: boot 2: APPLIANCE-NOT-READY: service "
                   f"firstboot-only did not get ready; serial log kept at {kept}\n"), err
    assert "boot 1: GET /healthz -> 200" in err
    assert "APPLIANCE-NOT-READY firstboot-only" in kept.read_text()
    first = kept.with_name(f"{image.name}.boot1-serial.log").read_text()
    assert "APPLIANCE-DOUBLE: first boot" in first and "APPLIANCE-READY" in first


def test_ready_without_healthz_fails(tmp_path, build, capsys, monkeypatch):
    monkeypatch.setattr(boot_check, "HEALTH_TIMEOUT_S", 10.0)
    image = build_double("nohealth", tmp_path)
    capsys.readouterr()  # the stand-in build's own output
    assert cli.main(["test-image", str(image), *ARGS]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"test-image: FAIL {image}: boot 1: GET /healthz (guest port 8080) "
                          "did not answer 200 within 10 s after READY: no connection"), out
