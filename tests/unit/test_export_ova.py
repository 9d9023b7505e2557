"""The OVA archive: member order, plain USTAR headers, fixed owners, modes and times."""

from __future__ import annotations

import os
import tarfile

import pytest

from appliance.errors import StageError
from appliance.stages.export import ova

EPOCH = 1_700_000_000
NAMES = ["tca-1.2.3.ovf", "tca-1.2.3.mf", "tca-1.2.3-disk1.vmdk"]


@pytest.fixture
def members(tmp_path):
    made = []
    for name, size in zip(NAMES, (700, 120, 5000), strict=True):
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        os.chmod(path, 0o600)  # the archive must not copy host modes
        made.append((name, path))
    return made


def test_members_in_order_with_fixed_ustar_headers(tmp_path, members):
    out = ova.write(tmp_path / "x.ova", members, EPOCH)
    with tarfile.open(out) as tar:
        found = tar.getmembers()
        assert [m.name for m in found] == NAMES
        for member, (_, path) in zip(found, members, strict=True):
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
            assert (member.mtime, member.mode, member.type) == (EPOCH, 0o644, tarfile.REGTYPE)
            assert member.size == path.stat().st_size
            # one 512-byte header per member: no GNU long-name or pax records before it
            assert member.offset_data == member.offset + 512
            assert tar.extractfile(member).read() == path.read_bytes()
    raw = out.read_bytes()
    for member in found:
        assert raw[member.offset + 257:member.offset + 265] == b"ustar\x0000"  # POSIX magic


def test_a_name_too_long_for_ustar_is_refused_before_writing(tmp_path, members):
    long = [("x" * 101 + ".vmdk", members[2][1])]
    with pytest.raises(StageError, match="longer than 100"):
        ova.write(tmp_path / "x.ova", long, EPOCH)
    assert not (tmp_path / "x.ova").exists()


def test_a_disk_over_8_gib_is_refused_naming_the_file(tmp_path):
    big = tmp_path / "big.vmdk"
    with open(big, "wb") as fh:  # sparse: costs no space
        fh.truncate(8 * 1024**3)
    with pytest.raises(StageError) as err:
        ova.write(tmp_path / "x.ova", [("big.vmdk", big)], EPOCH)
    assert str(big) in str(err.value) and "qcow2" in str(err.value.hint)
    assert not (tmp_path / "x.ova").exists()
