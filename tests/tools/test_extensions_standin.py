"""The extensions stage on the stand-in, as a user runs it (`pipeline.py lock`, then
`build --until extensions --locked`), the image path through the stand-in's registry, and
the shell scripts checked with shellcheck and busybox."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from appliance.config import Image
from appliance.paths import REPO
from appliance.run import Runner
from appliance.stages.extensions import images
from tests import extensions_stage
from tests.standin import cache, registry

pytestmark = [pytest.mark.tools, pytest.mark.timeout(1800)]

SCRIPTS = sorted(p for p in (REPO / "overlays").rglob("*")
                 if p.is_file() and p.read_bytes()[:2] == b"#!")


def test_scripts_pass_shellcheck_and_parse_in_busybox_sh():
    assert len(SCRIPTS) == 3
    check = subprocess.run(["shellcheck", "-s", "sh", *map(str, SCRIPTS)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    for script in SCRIPTS:
        parsed = subprocess.run(["busybox", "sh", "-n", str(script)], capture_output=True,
                                text=True)
        assert parsed.returncode == 0, (script, parsed.stderr)


@pytest.mark.parametrize("name", ["containerd", "faasd"])
def test_init_scripts_answer_usage_with_exit_2(name):
    script = REPO / "overlays" / name / "root/usr/local/etc/init.d" / name
    result = subprocess.run(["busybox", "sh", str(script), "bogus"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "start|stop|restart|status" in result.stderr


@pytest.fixture(scope="module")
def standin_build(tmp_path_factory):
    return extensions_stage.built(tmp_path_factory.mktemp("extensions"))


def test_the_standin_build_produces_the_extensions_with_metadata(standin_build):
    out = standin_build.folder
    for name in ("containerd", "faasd", "faasd-images"):
        for suffix in (".tcz", ".tcz.md5.txt", ".tcz.info", ".tcz.list"):
            assert (out / f"{name}{suffix}").is_file(), f"{name}{suffix}"
    kver = standin_build.run.kver
    assert (out / "containerd.tcz.dep").read_text().split() == [
        "iptables.tcz", "net-bridging-KERNEL.tcz", "overlay-KERNEL.tcz"]
    assert (out / "faasd.tcz.dep").read_text().split() == [
        "containerd.tcz", "faasd-images.tcz", "overlay-KERNEL.tcz"]
    order = standin_build.listing()["order"]
    assert order[-3:] == ["containerd.tcz", "faasd-images.tcz", "faasd.tcz"]
    for dep in ("iptables.tcz", f"ipv6-netfilter-{kver}.tcz", f"net-bridging-{kver}.tcz",
                f"overlay-{kver}.tcz"):
        assert order.index(dep) < order.index("containerd.tcz"), dep
    assert not [n for n in order if n.startswith("original-modules-")]  # nothing needs it
    listed = (out / "containerd.tcz.list").read_text().split()
    assert {"usr/local/bin/containerd", "usr/local/bin/ctr", "usr/local/sbin/runc",
            "opt/cni/bin/bridge", "opt/cni/bin/firewall", "usr/local/tce.installed/containerd",
            "usr/local/etc/containerd/config.toml"} <= set(listed)
    assert not any(p.startswith(("lib64", "var/", "etc/cni")) for p in listed)
    assert (out / "faasd-images.tcz.list").read_text().split() == [
        "usr/local/share/faasd/images/docker.io_standin_busybox_1.35.0.tar",
        "usr/local/share/faasd/images/images.lst"]
    for name in order:
        md5 = hashlib.md5(standin_build.path(name).read_bytes()).hexdigest()
        assert standin_build.listing()["extensions"][name]["md5"] == md5, name


def test_the_image_is_pinned_by_its_registry_digest(standin_build):
    lock = json.loads((standin_build.run.root / "standin.lock").read_text())
    pins = {p["key"]: p for p in lock["pins"]}
    pin = pins["image/docker.io/standin/busybox:1.35.0"]
    manifest = cache.info(registry.build_image())["manifest"]
    assert f"sha256:{pin['sha256']}" == manifest
    # the stand-in's registry is plain http: first use, accepted by the stand-in's lock
    assert pin["trusted"] == "manifest digest from the registry (registry without TLS verification)"
    assert pin["first_use"] and lock["first_use_accepted"][pin["key"]] == pin["sha256"]


def test_a_warm_build_skips_every_stage(standin_build):
    start = time.monotonic()
    again = standin_build.run.pipeline("build", "--until", "extensions", "--locked")
    warm = time.monotonic() - start
    assert again.returncode == 0, again.stderr
    assert "extensions: up to date, skipped" in again.stderr
    build = standin_build.run.build
    print(f"\ncold: `build --until extensions` {standin_build.seconds:.1f} s (kernel stage "
          f"{extensions_stage.stage_seconds(build, 'kernel'):.1f} s, extensions stage "
          f"{extensions_stage.stage_seconds(build, 'extensions'):.1f} s); warm: {warm:.1f} s")


# --- the image path: skopeo from the stand-in's registry, ctr import --------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory):
    with registry.Registry(free_port(), tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def test_pin_pull_and_archive_are_reproducible(own_registry, tmp_path, monkeypatch):
    image = Image(name="docker.io/standin/busybox:1.35.0",
                  source=f"{own_registry.address}/standin/busybox:1.35.0", tls_verify=False)
    runner = Runner(tmp_path / "logs", echo=lambda line: None)
    digest, _ = images.resolve_digest(image, runner)
    archives = []
    for n in (1, 2):  # two caches: two real pulls
        monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / f"cache{n}"))
        layout = images.pull(image, digest, runner, offline=False)
        archives.append(images.write_archive(layout, image.name, tmp_path / f"{n}.tar", 1))
    assert archives[0].read_bytes() == archives[1].read_bytes()
    again = images.pull(image, digest, runner, offline=True)  # from the cache, offline
    assert again == layout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd"),
                    reason="needs root and containerd on the host")
def test_ctr_imports_the_archive_under_its_name(standin_build, tmp_path):
    tree = tmp_path / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree),
                    str(standin_build.folder / "faasd-images.tcz")], check=True)
    folder = tree / "usr/local/share/faasd/images"
    archive, name = (folder / "images.lst").read_text().split()
    sock = Path("/tmp") / f"ctd-{os.getpid()}.sock"  # a unix socket path must stay short
    conf = tmp_path / "config.toml"
    conf.write_text(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{sock}"\n')
    with Runner(tmp_path, echo=lambda line: None).start(
            ["containerd", "--config", str(conf)], log="containerd"):
        ctr = ["ctr", "--address", str(sock), "--timeout", "10s"]
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, (tmp_path / "containerd.log").read_text()
            time.sleep(0.2)
        imported = subprocess.run([*ctr, "-n", "openfaas", "images", "import", "--platform",
                                   "linux/amd64", "--snapshotter", "native", str(folder / archive)],
                                  capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
        names = subprocess.run([*ctr, "-n", "openfaas", "images", "ls", "-q"],
                               capture_output=True, text=True).stdout.split()
    sock.unlink(missing_ok=True)
    assert names == [name] == ["docker.io/standin/busybox:1.35.0"]
