"""qemu-img command lines of the export stage, and reading what `info`/`check` print."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import StageError
from appliance.vm import qemu_img

SRC, DST = Path("/b/packer/disk.qcow2"), Path("/b/export.tmp/out.img")

INFO_VMDK = """qemu-img: warning: something on stderr
{
    "virtual-size": 67108864,
    "filename": "d.vmdk",
    "cluster-size": 65536,
    "format": "vmdk",
    "actual-size": 3186688,
    "format-specific": {
        "type": "vmdk",
        "data": {
            "create-type": "streamOptimized",
            "extents": [{"compressed": true, "virtual-size": 67108864}]
        }
    }
}
"""
CHECK_CORRUPT = """ERROR refcount table entry 0 has reserved bits set
{
    "image-end-offset": 65536,
    "total-clusters": 1024,
    "corruptions": 1,
    "check-errors": 53,
    "allocated-clusters": 48,
    "filename": "bad.qcow2",
    "format": "qcow2"
}
qemu-img: Check failed
"""


def test_compressed_qcow2_argv():
    assert qemu_img.convert_qcow2_argv(SRC, DST) == [
        "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-c", str(SRC), str(DST)]


@pytest.mark.parametrize("controller, adapter", [("ide", "ide"), ("sata", "lsilogic")])
def test_vmdk_argv_is_stream_optimized_with_the_controllers_adapter(controller, adapter):
    argv = qemu_img.convert_vmdk_argv(SRC, DST, controller)
    assert argv[:6] == ["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk"]
    assert argv[6:] == ["-o", f"subformat=streamOptimized,adapter_type={adapter}",
                        str(SRC), str(DST)]


def test_info_and_check_never_let_qemu_img_guess_the_format():
    assert qemu_img.info_argv(SRC, "vmdk") == [
        "qemu-img", "info", "-f", "vmdk", "--output=json", str(SRC)]
    assert qemu_img.check_argv(SRC, "qcow2") == [
        "qemu-img", "check", "-f", "qcow2", "--output=json", str(SRC)]


def test_info_is_read_from_json_amid_messages():
    info = qemu_img.parse_info(INFO_VMDK, DST)
    assert (info.format, info.virtual_size, info.actual_size, info.cluster_size,
            info.create_type) == ("vmdk", 67108864, 3186688, 65536, "streamOptimized")


def test_info_without_json_is_an_error_naming_the_file():
    with pytest.raises(StageError, match=str(DST)):
        qemu_img.parse_info("qemu-img: Could not open 'x': Image is not in qcow2 format", DST)


def test_check_reports_corruptions():
    report = qemu_img.parse_check(2, CHECK_CORRUPT)
    assert not report.clean
    assert (report.corruptions, report.leaks, report.allocated_clusters) == (1, 0, 48)
    assert report.problem() == "1 corruption(s), 0 leaked cluster(s)"


def test_check_of_an_unreadable_file_says_what_qemu_img_said():
    text = "qemu-img: Could not open 'junk.qcow2': Image is not in qcow2 format"
    report = qemu_img.parse_check(1, text)
    assert not report.clean and report.allocated_clusters is None
    assert report.problem() == text


def test_clean_check():
    report = qemu_img.parse_check(0, '{\n    "check-errors": 0,\n    "allocated-clusters": 7\n}')
    assert report.clean and report.allocated_clusters == 7
