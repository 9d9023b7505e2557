"""The boot timeline parser and its breakdown (appliance/vm/timeline.py)."""

from __future__ import annotations

from appliance.vm import timeline
from appliance.vm.timeline import Phase

BOOT_1 = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-tinycore64
APPLIANCE-PHASE kernel 1.91
APPLIANCE-PHASE extensions 11.20
\rAPPLIANCE-PHASE bootsync 12.10\r
[   12.500000] e1000: eth0 NIC Link is Up
APPLIANCE-PHASE cgroups 13.00
containerd: note: /var/lib/containerd is in RAM
APPLIANCE-PHASE containerd 15.40
APPLIANCE-PHASE images 30.10 imported=3 present=0
APPLIANCE-PHASE provider 33.00
[   34.1] random: crng init doneAPPLIANCE-PHASE gateway 35.90
APPLIANCE-PHASE ready 38.00
APPLIANCE-READY
"""

BOOT_2 = """\
[    0.000000] Linux version 6.1.0-tinycore64
APPLIANCE-PHASE kernel 1.88
APPLIANCE-PHASE extensions 10.00
APPLIANCE-PHASE bootsync 10.50
APPLIANCE-PHASE firstboot 10.70
APPLIANCE-PHASE cgroups 11.00
APPLIANCE-PHASE containerd 12.00
APPLIANCE-PHASE images 12.50 imported=0 present=3
APPLIANCE-PHASE provider 14.00
APPLIANCE-PHASE gateway 16.00
APPLIANCE-PHASE ready 16.30
APPLIANCE-READY
"""


def names(boot: list[Phase]) -> list[str]:
    return [p.name for p in boot]


def test_one_boot_with_noise_between_and_around_the_lines():
    [boot] = timeline.parse(BOOT_1)
    assert names(boot) == ["kernel", "extensions", "bootsync", "cgroups", "containerd",
                           "images", "provider", "gateway", "ready"]
    assert boot[0] == Phase("kernel", 1.91)
    assert boot[5] == Phase("images", 30.10, "imported=3 present=0")
    assert boot[7] == Phase("gateway", 35.90)  # glued to a kernel message: still read
    assert timeline.problems(boot) == []  # no firstboot: fine


def test_several_boots_in_one_log_split_at_kernel():
    boots = timeline.parse(BOOT_1 + BOOT_2)
    assert [len(b) for b in boots] == [9, 10]
    assert names(boots[1])[3] == "firstboot"
    assert all(timeline.problems(b) == [] for b in boots)


def test_uptime_going_back_starts_a_new_boot_even_without_kernel():
    text = "APPLIANCE-PHASE cgroups 13.0\nAPPLIANCE-PHASE ready 38.0\nAPPLIANCE-PHASE cgroups 9.5\n"
    assert [names(b) for b in timeline.parse(text)] == [["cgroups", "ready"], ["cgroups"]]


def test_nothing_to_parse():
    assert timeline.parse("") == []
    assert timeline.parse("APPLIANCE-READY\nAPPLIANCE-PHASE\nAPPLIANCE-PHASE x y\n") == []


def test_a_missing_phase_is_no_problem():
    [boot] = timeline.parse(BOOT_1.replace("APPLIANCE-PHASE provider 33.00\n", ""))
    assert "provider" not in names(boot)
    assert timeline.problems(boot) == []


def test_out_of_order_is_named():
    text = "APPLIANCE-PHASE kernel 1.0\nAPPLIANCE-PHASE containerd 5.0\nAPPLIANCE-PHASE cgroups 6.0\n"
    [boot] = timeline.parse(text)
    assert timeline.problems(boot) == ["phase 'cgroups' after 'containerd'"]


def test_a_duplicate_is_named():
    text = "APPLIANCE-PHASE cgroups 5.0\nAPPLIANCE-PHASE containerd 6.0\nAPPLIANCE-PHASE cgroups 7.0\n"
    [boot] = timeline.parse(text)
    assert timeline.problems(boot) == ["phase 'cgroups' printed more than once"]


def test_an_unknown_phase_is_named():
    [boot] = timeline.parse("APPLIANCE-PHASE kernal 1.0\n")
    assert timeline.problems(boot) == ["unknown phase 'kernal'"]


def test_the_canonical_order():
    assert timeline.PHASES == ("kernel", "extensions", "bootsync", "firstboot", "cgroups",
                               "containerd", "images", "provider", "gateway", "ready")


def test_detail_fields():
    images = Phase("images", 30.1, "imported=0 present=3")
    assert timeline.detail_field(images, "imported") == "0"
    assert timeline.detail_field(images, "present") == "3"
    assert timeline.detail_field(images, "missing") is None
    assert timeline.detail_field(Phase("ready", 1.0), "imported") is None


def test_find():
    [boot] = timeline.parse(BOOT_2)
    assert timeline.find(boot, "ready") == Phase("ready", 16.30)
    assert timeline.find(boot, "nothing") is None


def test_breakdown_gives_each_phase_and_its_delta():
    [boot] = timeline.parse(BOOT_1)
    text = timeline.breakdown(boot)
    assert text.startswith("kernel 1.9 | extensions 11.2 (+9.3) | bootsync 12.1 (+0.9) | ")
    assert "images 30.1 (+14.7) [imported=3 present=0] | " in text
    assert text.endswith(" | ready 38.0 (+2.1)")
    assert timeline.breakdown([]) == "no APPLIANCE-PHASE line"
