"""Publishing into out/: all or nothing, never a half-written file; SHA256SUMS format."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil

import pytest

from appliance.errors import StageError
from appliance.stages.export import publish


@pytest.fixture
def made(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    files = []
    for name in ("a.qcow2", "a.ova", "manifest.json"):
        (work / name).write_bytes(f"new {name}".encode())
        files.append(work / name)
    return files


def test_files_land_under_their_names_and_replace_old_ones(tmp_path, made):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.qcow2").write_bytes(b"old")
    (out / "a.qcow2.part").write_bytes(b"stale part of a killed run")
    published = publish.publish(made, out)
    assert published == [out / f.name for f in made]
    assert sorted(p.name for p in out.iterdir()) == ["a.ova", "a.qcow2", "manifest.json"]
    assert (out / "a.qcow2").read_bytes() == b"new a.qcow2"


def test_a_failure_while_staging_leaves_out_as_it_was(tmp_path, made, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for f in made:
        (out / f.name).write_bytes(b"previous good")
    calls = []

    def no_space(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(publish.shutil, "copyfile", no_space)
    with pytest.raises(StageError, match="left as they were"):
        publish.publish(made, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        f.name: b"previous good" for f in made}


def test_out_gets_copies_so_booting_one_leaves_the_build_alone(tmp_path, made):
    out = tmp_path / "out"
    publish.publish(made, out)
    assert (out / "a.ova").read_bytes() == b"new a.ova"
    assert os.stat(out / "a.ova").st_ino != os.stat(made[1]).st_ino
    (out / "a.qcow2").write_bytes(b"changed by a VM booted from out/")
    assert made[0].read_bytes() == b"new a.qcow2"


def test_sha256sums_is_sha256sum_c_format(made):
    digests = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in made}
    lines = publish.sha256sums(digests).splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted(f.name for f in made)
    for line in lines:
        hexdigest, name = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line).groups()
        assert hexdigest == hashlib.sha256((made[0].parent / name).read_bytes()).hexdigest()
