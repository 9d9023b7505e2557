"""Reading Packer's machine-readable output: progress, phases, the verify verdict."""

from __future__ import annotations

from appliance.stages.packer.output import Progress, parse_line, script_text

# Lines as Packer 1.6.6 printed them in a stand-in build (times shortened).
BUILD = """\
100,,ui,say,==> qemu.appliance: Retrieving ISO
101,,ui,say,==> qemu.appliance: Starting VM%!(PACKER_COMMA) booting from CD-ROM
106,,ui,say,==> qemu.appliance: Waiting for SSH to become available...
124,,ui,say,==> qemu.appliance: Connected to SSH!
125,,ui,say,==> qemu.appliance: Provisioning with shell script: /w/scripts/install-to-disk.sh
126,,ui,message,    qemu.appliance: install-to-disk: traditional install from /mnt/sr0 onto /dev/sda
127,,ui,message,    qemu.appliance: install-to-disk: root filesystem UUID=3f1c2a9e-7b4d-4e21-9c55-0a1b2c3d4e5f
141,,ui,message,    qemu.appliance: install-to-disk: done
142,,ui,say,==> qemu.appliance: Provisioning with shell script: /tmp/packer-shell2739985714
150,,ui,say,==> qemu.appliance: Provisioning with shell script: /w/scripts/verify.sh
164,,ui,message,    qemu.appliance: verify: / is ext4 (traditional install)
190,,ui,message,    qemu.appliance: APPLIANCE-VERIFY: PASS
191,,ui,say,==> qemu.appliance: Provisioning with shell script: /w/scripts/cleanup.sh
192,,ui,message,    qemu.appliance: cleanup: emptied /var/lib/containerd
270,,ui,say,==> qemu.appliance: Gracefully halting virtual machine...
274,,ui,say,==> qemu.appliance: Converting hard drive...
277,qemu.appliance,artifact-count,1
"""


def fed(text: str) -> tuple[Progress, list[str]]:
    shown: list[str] = []
    progress = Progress(show=shown.append)
    for line in text.splitlines():
        progress.feed(line)
    return progress, shown


def test_lines_are_split_and_unescaped():
    line = parse_line("101,,ui,say,==> qemu: Starting VM%!(PACKER_COMMA) booting\\nnext")
    assert (line.timestamp, line.kind, line.text) == (101, "say", "==> qemu: Starting VM, booting\nnext")
    assert parse_line("277,qemu.appliance,artifact-count,1").kind == "artifact-count"
    assert parse_line("not machine readable") is None
    assert script_text("    qemu.appliance: verify: ok") == "verify: ok"


def test_phases_are_timed_from_packer_and_the_scripts():
    progress, _ = fed(BUILD)
    assert progress.phases() == {"boot": 5, "ssh": 20, "install": 16, "reboot": 22,
                                 "verify": 28, "cleanup": 78, "shutdown": 4, "convert": 3}


def test_pass_is_read_and_shown():
    progress, shown = fed(BUILD)
    assert progress.verdict == "PASS"
    assert "packer: APPLIANCE-VERIFY: PASS" in shown
    assert "packer: install-to-disk: done" in shown
    assert "packer: phase verify" in shown


def test_a_fail_carries_its_reason():
    progress, _ = fed("1,,ui,message,    qemu.appliance: APPLIANCE-VERIFY: FAIL / is rootfs%!(PACKER_COMMA) not ext4\n")
    assert (progress.verdict, progress.reason) == ("FAIL", "/ is rootfs, not ext4")


def test_no_verdict_without_the_marker():
    progress, _ = fed(BUILD.replace("APPLIANCE-VERIFY: PASS", "verify: all good"))
    assert progress.verdict is None


def test_the_scripts_error_line_is_preferred_to_packers_summary():
    progress, _ = fed(
        "1,,ui,error,==> qemu.appliance: cp: cannot stat x\n"
        "2,,ui,error,==> qemu.appliance: install-to-disk: ERROR: mkfs.ext4 /dev/sda1 failed\n"
        "3,,ui,error,Build 'qemu.appliance' errored after 36 seconds\n")
    assert progress.first_error() == "install-to-disk: ERROR: mkfs.ext4 /dev/sda1 failed"
    only_packer, _ = fed("3,,ui,error,Build 'qemu.appliance' errored after 36 seconds\n")
    assert only_packer.first_error() == "Build 'qemu.appliance' errored after 36 seconds"


def test_the_root_filesystem_uuid_is_read_from_the_install():
    progress, _ = fed(BUILD)
    assert progress.root_fs == "UUID=3f1c2a9e-7b4d-4e21-9c55-0a1b2c3d4e5f"
    assert fed(BUILD.replace("root filesystem UUID=", "no uuid "))[0].root_fs is None
