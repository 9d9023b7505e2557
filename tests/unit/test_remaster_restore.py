"""mydata.tgz from the recipe's restore list (appliance/stages/remaster/restore.py)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from appliance.config import RestoreItem
from appliance.errors import RemasterError
from appliance.stages.remaster.restore import mydata_tgz

EPOCH = 1704067200


def item(source: Path, path: str, **kw) -> RestoreItem:
    return RestoreItem(source=str(source), path=path, **kw)


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "site"
    (root / "ssh").mkdir(parents=True)
    (root / "ssh" / "config").write_text("Host *\n")
    (root / "ssh" / "id").write_text("secret\n")
    (root / "motd").write_text("welcome\n")
    (root / "tool").write_text("#!/bin/sh\n")
    (root / "tool").chmod(0o775)
    return root


def test_members_are_relative_sorted_owned_and_dated(tree):
    data = mydata_tgz([item(tree / "motd", "etc/motd"),
                       item(tree / "ssh", "home/tc/.ssh", mode=0o600),
                       item(tree / "tool", "usr/local/bin/tool")], EPOCH)
    found = members(data)
    assert list(found) == sorted(found) == ["etc/motd", "home/tc/.ssh", "home/tc/.ssh/config",
                                            "home/tc/.ssh/id", "usr/local/bin/tool"]
    for name, m in found.items():
        assert not name.startswith("/") and ".." not in name.split("/")
        assert m.mtime == EPOCH
    assert (found["etc/motd"].uid, found["etc/motd"].uname, found["etc/motd"].mode) == (0, "root", 0o644)
    ssh = found["home/tc/.ssh/id"]
    assert (ssh.uid, ssh.gid, ssh.uname, ssh.gname, ssh.mode) == (1001, 50, "tc", "staff", 0o600)
    assert found["home/tc/.ssh"].isdir() and found["home/tc/.ssh"].mode == 0o755
    assert found["usr/local/bin/tool"].mode == 0o755  # executable on the host
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.extractfile("etc/motd").read() == b"welcome\n"


def test_owner_can_be_given(tree):
    data = mydata_tgz([item(tree / "motd", "home/tc/motd", owner="root")], EPOCH)
    assert members(data)["home/tc/motd"].uid == 0


def test_archive_is_deterministic(tree):
    items = [item(tree / "ssh", "home/tc/.ssh")]
    first = mydata_tgz(items, EPOCH)
    os.utime(tree / "ssh" / "config", (0, 0))  # host dates do not matter
    assert mydata_tgz(items, EPOCH) == first
    assert gzip.decompress(first)  # plain gzip, no timestamp: bytes 4-8 are zero
    assert first[4:8] == b"\0\0\0\0"


def test_nothing_to_restore_is_no_archive():
    assert mydata_tgz([], EPOCH) is None


@pytest.mark.parametrize("path", ["/etc/motd", "../x", "etc/../x", "etc/./x", "", "a b",
                                  "etc/motd\n", "opt/bootlocal.sh", "opt/bootsync.sh",
                                  "opt/firstboot.sh", "opt/yaml-subset.awk"])
def test_bad_destinations_are_recipe_errors(tree, path):
    with pytest.raises(ValueError):
        item(tree / "motd", path)


def test_a_folder_carrying_a_boot_script_is_refused(tree):
    (tree / "opt").mkdir()
    (tree / "opt" / "bootsync.sh").write_text("#!/bin/sh\n")
    with pytest.raises(RemasterError, match="appliance's own boot script"):
        mydata_tgz([item(tree / "opt", "opt")], EPOCH)


def test_symlinks_and_fifos_are_refused(tree):
    (tree / "ssh" / "link").symlink_to("/etc/shadow")
    with pytest.raises(RemasterError, match="is a symlink"):
        mydata_tgz([item(tree / "ssh", "home/tc/.ssh")], EPOCH)
    (tree / "ssh" / "link").unlink()
    os.mkfifo(tree / "ssh" / "pipe")
    with pytest.raises(RemasterError, match="device, fifo or socket"):
        mydata_tgz([item(tree / "ssh", "home/tc/.ssh")], EPOCH)


def test_odd_file_names_inside_a_folder_are_refused(tree):
    (tree / "ssh" / "with space").write_text("x")
    with pytest.raises(RemasterError, match="not a plain relative path"):
        mydata_tgz([item(tree / "ssh", "home/tc/.ssh")], EPOCH)


def test_missing_source_and_duplicates(tree):
    with pytest.raises(RemasterError, match="no such file or folder"):
        mydata_tgz([item(tree / "absent", "etc/absent")], EPOCH)
    with pytest.raises(RemasterError, match="listed twice"):
        mydata_tgz([item(tree / "ssh", "home/tc/.ssh"),
                    item(tree / "motd", "home/tc/.ssh/config")], EPOCH)
