"""The extensions stage with real mksquashfs on small synthetic inputs: listings match the
overlay, metadata is Tiny Core's, two builds from scratch are byte-identical (whatever the
checkout's modes and mtimes), and editing one overlay rebuilds only that extension."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.config import Recipe
from appliance.engine import Stage, StageRunner
from appliance.lock import Lock, Pin
from appliance.run import Runner
from appliance.stages.extensions import stage as extensions
from appliance.tinycore import tcz
from appliance.tools import tool_version

pytestmark = pytest.mark.tools

KVER = "6.1.192-tinycore64"
EPOCH = 1704067200
ALPHA = """name = "alpha"
version_from = "tool"
deps = ["base.tcz"]
[info]
Description = "alpha test extension"
Author = "tests"
Original-site = "https://example.org/"
Copying-policy = "MIT"
[[install]]
release = "tool"
members = ["bin/*"]
to = "usr/local/bin/"
[files."usr/local/etc/init.d/alpha"]
mode = "0755"
[runtime]
writes = ["var/lib/alpha"]
"""
BETA = """name = "beta"
version = "2.0"
deps = ["alpha.tcz"]
module_deps = ["overlay"]
required_modules = ["overlay"]
[info]
Description = "beta test extension"
Author = "tests"
Original-site = "https://example.org/"
Copying-policy = "MIT"
Comments = "two\\nlines"
"""


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def make_overlays(root: Path, file_mode: int = 0o644, exe_mode: int = 0o755) -> Path:
    write(root / "alpha/extension.toml", ALPHA)
    write(root / "alpha/root/usr/local/etc/init.d/alpha", "#!/bin/sh\nset -eu\n", exe_mode)
    write(root / "alpha/root/usr/local/etc/alpha.conf", "a = 1\n", file_mode)
    write(root / "alpha/root/usr/local/tce.installed/alpha", "#!/bin/sh\nset -eu\n", exe_mode)
    write(root / "beta/extension.toml", BETA)
    write(root / "beta/root/usr/local/share/beta/data.txt", "beta\n", file_mode)
    return root


def stamp(stage_dir: Path, outputs: dict[str, Path]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    described = {k: {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                     "size": p.stat().st_size} for k, p in outputs.items()}
    (stage_dir / "stamp.json").write_text(json.dumps({"outputs": described}))


def upstream(inputs: Path) -> dict[str, Path]:
    """Fake fetch and kernel stage products: a Tiny Core extension, a release tarball and
    the kernel stage's overlay extension with its modules.json."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (("bin/tool", b"#!/bin/sh\necho tool\n"), ("bin/helper", b"h\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    files = {"tcz/base.tcz": write(inputs / "base.tcz", b"base squashfs"),
             "release/tool": write(inputs / "tool-1.2.tar.gz", raw.getvalue())}
    overlay = write(inputs / f"overlay-{KVER}.tcz", b"overlay squashfs")
    modules = write(inputs / "modules.json", json.dumps({"extensions": [
        {"name": overlay.name, "kernel_name": "overlay-KERNEL.tcz", "modules": ["overlay"],
         "deps": []}]}))
    return {**files, "kernel": {overlay.name: overlay, "modules.json": modules}}


def context(tmp: Path, build_root: Path, inputs: dict) -> SimpleNamespace:
    stamp(build_root / "fetch", {k: v for k, v in inputs.items() if k != "kernel"})
    stamp(build_root / "kernel", inputs["kernel"])
    recipe = Recipe.model_validate({
        "source_date_epoch": EPOCH, "overlays": ["alpha", "beta"],
        "tinycore": {"mirrors": ["http://m/"], "guest_mirror": "http://m/", "kernel": KVER,
                     "extensions": ["base"]},
        "releases": {"tool": {"version": "1.2", "url": "http://m/tool-1.2.tar.gz"}},
        "kernel": {"config": "c", "source": "s", "modules": ["overlay"]}})
    pin = Pin("tcz/base.tcz", "base.tcz", "11.1", "http://m/base.tcz",
              hashlib.sha256(b"base squashfs").hexdigest(), hashlib.md5(b"base squashfs").hexdigest())
    lock = Lock({}, {pin.key: pin}, ["base.tcz"], {"base.tcz": []})
    return SimpleNamespace(recipe=recipe, lock=lock, build_root=build_root,
                           runner=CountingRunner(tmp / "logs", echo=lambda line: None),
                           fetcher=SimpleNamespace(offline=True))


class CountingRunner(Runner):
    """The real runner, counting the extensions each mksquashfs call packs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.squashed: list[str] = []

    def run(self, argv, **kwargs):
        if argv[0] == "mksquashfs":
            self.squashed.append(Path(argv[2]).name)
        return super().run(argv, **kwargs)


def build(ctx, data_root: Path, monkeypatch) -> Path:
    monkeypatch.setattr(extensions, "overlays_root", lambda: data_root / "overlays")
    stage = Stage("extensions", extensions.VERSION, extensions.key_slice, extensions.run,
                  data="overlays", tools=extensions.TOOLS)
    StageRunner([stage], ctx.build_root, tool_version, data_root=data_root).execute(ctx)
    return ctx.build_root / "extensions"


@pytest.fixture
def world(tmp_path, monkeypatch):
    make_overlays(tmp_path / "data" / "overlays")
    inputs = upstream(tmp_path / "inputs")
    ctx = context(tmp_path, tmp_path / "build", inputs)
    return SimpleNamespace(tmp=tmp_path, inputs=inputs, ctx=ctx,
                           build=lambda: build(ctx, tmp_path / "data", monkeypatch))


def listing(path: Path) -> list[tuple[str, str, str]]:
    """(mode, owner, path) of every entry, from unsquashfs -lln."""
    out = subprocess.run(["unsquashfs", "-lln", str(path)], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1].startswith("squashfs-root"):
            rows.append((parts[0], parts[1], parts[-1].removeprefix("squashfs-root")))
    return rows


def test_tcz_listing_and_metadata(world):
    out = world.build()
    rows = {path: (mode, owner) for mode, owner, path in listing(out / "alpha.tcz")}
    assert rows == {
        "": ("drwxr-xr-x", "0/0"),
        "/usr": ("drwxr-xr-x", "0/0"), "/usr/local": ("drwxr-xr-x", "0/0"),
        "/usr/local/bin": ("drwxr-xr-x", "0/0"),
        "/usr/local/bin/helper": ("-rwxr-xr-x", "0/0"),
        "/usr/local/bin/tool": ("-rwxr-xr-x", "0/0"),
        "/usr/local/etc": ("drwxr-xr-x", "0/0"), "/usr/local/etc/init.d": ("drwxr-xr-x", "0/0"),
        "/usr/local/etc/init.d/alpha": ("-rwxr-xr-x", "0/0"),
        "/usr/local/etc/alpha.conf": ("-rw-r--r--", "0/0"),
        "/usr/local/tce.installed": ("drwxrwxr-x", f"0/{tcz.STAFF_GID}"),
        "/usr/local/tce.installed/alpha": ("-rwxrwxr-x", f"0/{tcz.STAFF_GID}"),
    }
    files = sorted(p.lstrip("/") for p, (mode, _) in rows.items() if mode.startswith("-"))
    assert (out / "alpha.tcz.list").read_text().splitlines() == files
    data = (out / "alpha.tcz").read_bytes()
    assert (out / "alpha.tcz.md5.txt").read_text() == \
        f"{hashlib.md5(data).hexdigest()}  alpha.tcz\n"
    assert (out / "alpha.tcz.dep").read_text() == "base.tcz\n"
    assert (out / "beta.tcz.dep").read_text() == "alpha.tcz\noverlay-KERNEL.tcz\n"
    info = (out / "beta.tcz.info").read_text()
    fields = [m.group(1) for m in re.finditer(r"^([A-Za-z_-]+):", info, re.MULTILINE)]
    assert fields == list(tcz.INFO_FIELDS)
    assert "Version:        2.0\n" in info and "Title:          beta.tcz\n" in info
    assert "Comments:       two\n                lines\n" in info
    assert "Version:        1.2\n" in (out / "alpha.tcz.info").read_text()  # version_from


def test_the_load_order_lists_every_extension_dependencies_first(world):
    out = world.build()
    listed = json.loads((out / "extensions.json").read_text())
    assert listed["order"] == ["base.tcz", f"overlay-{KVER}.tcz", "alpha.tcz", "beta.tcz"]
    assert (out / "onboot.lst").read_text().split() == listed["order"]
    beta = listed["extensions"]["beta.tcz"]
    assert beta["deps"] == ["alpha.tcz", f"overlay-{KVER}.tcz"] and beta["path"] == "beta.tcz"
    assert beta["md5"] == hashlib.md5((out / "beta.tcz").read_bytes()).hexdigest()
    assert listed["extensions"]["base.tcz"]["source"] == "tinycore"
    assert listed["extensions"][f"overlay-{KVER}.tcz"]["source"] == "kernel"


def test_two_builds_from_scratch_are_byte_identical(world, monkeypatch):
    first = world.build()
    # A second checkout: group-writable files (umask 002), other mtimes, another build root.
    data2 = world.tmp / "data2"
    make_overlays(data2 / "overlays", file_mode=0o664, exe_mode=0o775)
    for path in (data2 / "overlays").rglob("*"):
        os.utime(path, (1, 1))
    ctx2 = context(world.tmp, world.tmp / "build2", world.inputs)
    second = build(ctx2, data2, monkeypatch)
    assert ctx2.runner.squashed == ["alpha.tcz", "beta.tcz"]  # really built, not reused
    names = sorted(p.name for p in first.iterdir() if p.name.startswith(("alpha", "beta")))
    assert len(names) == 10  # two .tcz, each with .md5.txt, .dep, .info and .list
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_changing_one_overlay_file_rebuilds_only_that_extension(world, capsys):
    out = world.build()
    beta_inode = (out / "beta.tcz").stat().st_ino
    alpha_before = (out / "alpha.tcz").read_bytes()
    assert world.ctx.runner.squashed == ["alpha.tcz", "beta.tcz"]
    write(world.tmp / "data/overlays/alpha/root/usr/local/etc/alpha.conf", "a = 2\n")
    capsys.readouterr()
    world.ctx.runner.squashed.clear()
    out = world.build()
    err = capsys.readouterr().err
    assert "extensions: rebuilding (overlays/alpha changed)" in err
    assert "beta.tcz unchanged, reused" in err
    assert world.ctx.runner.squashed == ["alpha.tcz"]
    assert (out / "alpha.tcz").read_bytes() != alpha_before
    assert (out / "beta.tcz").stat().st_ino == beta_inode  # the very same file, linked
    listed = json.loads((out / "extensions.json").read_text())
    assert listed["extensions"]["alpha.tcz"]["md5"] == \
        hashlib.md5((out / "alpha.tcz").read_bytes()).hexdigest()


def test_an_unchanged_build_is_skipped_and_a_damaged_output_is_not_reused(world, capsys):
    out = world.build()
    world.ctx.runner.squashed.clear()
    world.build()
    assert "extensions: up to date, skipped" in capsys.readouterr().err
    assert world.ctx.runner.squashed == []
    damaged = bytearray((out / "beta.tcz").read_bytes())
    damaged[100] ^= 0xFF
    (out / "beta.tcz").unlink()
    (out / "beta.tcz").write_bytes(bytes(damaged))  # same size: only its md5 tells
    write(world.tmp / "data/overlays/alpha/root/usr/local/etc/alpha.conf", "a = 3\n")
    world.build()
    assert world.ctx.runner.squashed == ["alpha.tcz", "beta.tcz"]


def test_a_service_without_an_init_script_is_an_error(world):
    world.ctx.recipe = world.ctx.recipe.model_copy(update={"services": ["alpha", "gamma"]})
    with pytest.raises(Exception, match=r"services \['gamma'\] have no /usr/local/etc/init.d"):
        world.build()


def test_our_extensions_are_lz4_high_compression_in_128k_blocks(world):
    """docs/decisions.md#extension-compression: not Tiny Core's gzip in 4 KiB blocks."""
    out = world.build()
    info = subprocess.run(["unsquashfs", "-s", str(out / "alpha.tcz")], capture_output=True,
                          text=True, check=True).stdout
    assert "Compression lz4\n\tHigh Compression option specified (-Xhc)" in info
    assert "Block size 131072\n" in info


def test_source_date_epoch_from_the_environment_wins(world, monkeypatch):
    """docs/architecture.md#stage-key: the variable overrides the recipe; mksquashfs itself refuses it
    beside its time options, so the runner drops it from mksquashfs's environment."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1714067200")
    out = world.build()
    info = subprocess.run(["unsquashfs", "-s", str(out / "alpha.tcz")], capture_output=True,
                          text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
    assert "Creation or last append time Thu Apr 25 17:46:40 2024" in info
    assert "Current:        2024/04/25 Version 1.2" in (out / "alpha.tcz.info").read_text()
