"""The accelerator probe against the real QEMU of this machine."""

import pytest

from appliance.run import Runner
from appliance.vm import qemu

pytestmark = pytest.mark.tools


def test_boot_sector_probe_runs_under_tcg():
    assert qemu.run_probe(Runner(echo=lambda line: None), "tcg") is None


def test_probe_reaches_a_verdict():
    accel = qemu.probe_accelerator(Runner(echo=lambda line: None), qemu.find_probe_kernel())
    assert accel.name in ("kvm", "tcg")
    if accel.name == "tcg":
        assert accel.reason.startswith("KVM unusable (")
