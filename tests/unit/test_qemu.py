"""Accelerator probe logic and argv (the real QEMU run is in tests/tools)."""

import pytest

from appliance import tools
from appliance.errors import ToolError
from appliance.vm import qemu
from tests.fakes import FakeRunner


def test_probe_image_is_a_boot_sector():
    image = qemu.probe_image()
    assert len(image) == 512 and image.endswith(b"\x55\xaa")


def test_probe_argv_uses_debug_exit_and_the_accelerator(tmp_path):
    argv = qemu.probe_argv("tcg", tmp_path / "p.img")
    # the probe accepts the same -accel (with TCG's options) as every boot after it
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg,tb-size=64"]
    assert qemu.probe_argv("kvm", tmp_path / "p.img")[2] == "kvm"
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert f"file={tmp_path / 'p.img'},format=raw,if=ide" in argv


def answers(kvm_code, tcg_code):
    return lambda argv: ((kvm_code if argv[2] == "kvm" else tcg_code), "")


def test_kvm_chosen_only_when_the_test_boot_works(monkeypatch):
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: None)
    runner = FakeRunner(answers(qemu.PROBE_EXIT, qemu.PROBE_EXIT))
    assert qemu.probe_accelerator(runner).name == "kvm"
    assert len(runner.calls) == 1


def test_hanging_kvm_falls_back_to_tcg_and_says_why(monkeypatch):
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: None)
    runner = FakeRunner(answers(-14, qemu.PROBE_EXIT))
    accel = qemu.probe_accelerator(runner)
    assert accel.name == "tcg"
    assert "KVM unusable (a kvm test boot hung and was stopped after 30 s)" in accel.reason
    assert [c[2].split(",")[0] for c in runner.calls] == ["kvm", "tcg"]


def test_missing_dev_kvm_skips_the_kvm_run(monkeypatch):
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: "/dev/kvm does not exist")
    runner = FakeRunner(answers(1, qemu.PROBE_EXIT))
    assert qemu.probe_accelerator(runner).reason.startswith("KVM unusable (/dev/kvm does not exist)")
    assert [c[2].split(",")[0] for c in runner.calls] == ["tcg"]


def test_qemu_that_cannot_run_anything_is_an_error(monkeypatch):
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: "/dev/kvm does not exist")
    with pytest.raises(ToolError, match="QEMU cannot run a guest at all"):
        qemu.probe_accelerator(FakeRunner(lambda argv: (1, "qemu: could not load PC BIOS")))


@pytest.mark.parametrize("text, version", [("Packer v1.6.6", (1, 6, 6)), ("1.11.2", (1, 11, 2)),
                                           ("nothing", None)])
def test_parse_version(text, version):
    assert tools.parse_version(text) == version


def test_packer_generation():
    assert tools.packer_generation((1, 6, 6)).startswith("1.6: no required_plugins")
    assert tools.packer_generation((1, 8, 0)).startswith(">=1.7: plugins file")
    assert "no longer bundled" in tools.packer_generation((1, 11, 0))


def test_kvm_that_hangs_a_real_kernel_is_refused(monkeypatch, tmp_path):
    """Seen on this project's machines: the boot sector runs under KVM, Linux hangs."""
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: None)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"x")

    def respond(argv):
        if "-kernel" in argv:
            return (-14, "") if argv[2] == "kvm" else (0, "Kernel panic - not syncing")
        return qemu.PROBE_EXIT, ""

    runner = FakeRunner(respond)
    accel = qemu.probe_accelerator(runner, kernel)
    assert accel.name == "tcg"
    assert "a kvm boot of bzImage hung" in accel.reason
    assert [(c[2].split(",")[0], "-kernel" in c) for c in runner.calls] == [
        ("kvm", False), ("kvm", True), ("tcg", False)]


def test_kernel_probe_argv(tmp_path):
    argv = qemu.kernel_probe_argv("kvm", tmp_path / "k")
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert "-no-reboot" in argv and argv[argv.index("-kernel") + 1] == str(tmp_path / "k")


def test_find_probe_kernel_prefers_the_environment(monkeypatch, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    monkeypatch.setenv("APPLIANCE_PROBE_KERNEL", str(kernel))
    assert qemu.find_probe_kernel() == kernel
    monkeypatch.setenv("APPLIANCE_PROBE_KERNEL", str(tmp_path / "missing"))
    assert qemu.find_probe_kernel() is None
