"""The stand-in mirror served over HTTP, with the real `pipeline.py lock` and `fetch` on it.

Builds (or reuses) the whole stand-in once per session: the kernel comes from the cache
(a cold kernel build takes about 6 minutes), everything else takes seconds.
"""

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import PipelineError
from appliance.fetch import sha256_file
from appliance.paths import REPO
from appliance.run import Runner, kill_group
from tests.http_status import http_status
from tests.standin import cache, debfiles, extensions, mirror, module_extensions, registry, releases
from tests.standin import server as standin_server

pytestmark = pytest.mark.tools

RECIPE = REPO / "tests" / "standin" / "recipe.toml"
INTERP = extensions.INTERPRETER
LIB64_INTERP = "/lib64/ld-linux-x86-64.so.2"
BINARY_EXTENSIONS = [f"{s.name}.tcz" for s in extensions.SPECS]


def quiet() -> Runner:
    return Runner(echo=lambda line: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          **kw)


@pytest.fixture(scope="module")
def built():
    return mirror.build_all(quiet())


@pytest.fixture(scope="module")
def site(built, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("standin")
    registry.ensure_running()  # the recipe's image is pinned from it (the overlay names it)
    with standin_server.running(built.mirror) as base_url:
        port = int(base_url.rstrip("/").rsplit(":", 1)[1])
        overlay = tmp / "standin.toml"
        overlay.write_text(mirror.overlay_text(built.kernel.release,
                                               releases.versions(quiet()), port))
        env = {**os.environ, "APPLIANCE_CACHE": str(tmp / "cache"),
               "APPLIANCE_BUILD": str(tmp / "build")}
        yield {"url": base_url, "overlay": overlay, "env": env, "tmp": tmp}


def tcz(built, name: str) -> Path:
    return built.mirror / mirror.RELEASE_DIR / "tcz" / name


def pipeline(site, *args):
    return run(sys.executable, REPO / "pipeline.py", *args, "-c", RECIPE, "-c", site["overlay"],
               "--lock", site["tmp"] / "standin.lock", env=site["env"])


# -- the recipe and the real pipeline ----------------------------------------------------


def test_recipe_matches_what_the_standin_serves(built, tmp_path, monkeypatch):
    # registry.ensure_running() (used by earlier tests in the session) exports the port of
    # the registry it started; this test is about the default ports.
    monkeypatch.delenv("STANDIN_REGISTRY_PORT", raising=False)
    recipe = config.load([RECIPE]).recipe
    source = debfiles.versions(quiet(), ["linux-source-6.1"], transitive=False)
    assert recipe.tinycore.kernel == built.kernel.release
    assert mirror.kernel_release_of(source["linux-source-6.1"]) == built.kernel.release
    extras = {"faasd-compose": "docker-compose.yaml", "faasd-prometheus": "prometheus.yml"}
    assert set(recipe.releases) == set(releases.RELEASES) | set(extras)
    assert set(extras.values()) == set(releases.FAASD_EXTRAS)
    current = releases.versions(quiet())
    for name, rel in recipe.releases.items():
        if name in extras:  # faasd's compose files, served beside the faasd double
            faasd = mirror.release_urls("faasd")["url"].rsplit("/", 1)[0]
            assert (rel.version, rel.url, rel.checksum_url) == (
                current["faasd"], f"{faasd}/{extras[name]}", "{url}.sha256"), name
            continue
        assert rel.version == current[name], name
        urls = mirror.release_urls(name)
        assert (rel.url, rel.checksum_url) == (urls["url"], urls["checksum_url"]), name
    image = registry.build_image()
    assert [(i.name, i.source) for i in recipe.images] == [
        (cache.info(image)["image"],
         f"127.0.0.1:{registry.DEFAULT_PORT}/{registry.REPOSITORY}:1.35.0")]
    assert [e for e in recipe.tinycore.extensions if "KERNEL" not in e] == [
        n.removesuffix(".tcz") for n in BINARY_EXTENSIONS]
    # the overlay `build` writes for the default port changes nothing today
    overlay = tmp_path / "standin.toml"
    overlay.write_text(mirror.overlay_text(built.kernel.release, current, mirror.DEFAULT_PORT))
    assert config.load([RECIPE, overlay]).recipe == recipe


def test_lock_and_locked_fetch_resolve_every_pin_from_the_mirror(built, site):
    locked = pipeline(site, "lock", "--accept-first-use")
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((site["tmp"] / "standin.lock").read_text())
    # plain http on loopback: every pin is first use, and accepted explicitly
    assert all(p["first_use"] for p in lock["pins"])
    assert lock["first_use_accepted"] == {p["key"]: p["sha256"] for p in lock["pins"]}
    kver = built.kernel.release
    names = [f"{n}.tcz" for n in ("openssh", "e2fsprogs", "syslinux")] + [
        f"ipv6-netfilter-{kver}.tcz", "iptables.tcz", f"net-bridging-{kver}.tcz", "acpid.tcz"]
    assert lock["extensions"]["order"] == names  # deps first: netfilter before iptables
    assert lock["extensions"]["deps"]["iptables.tcz"] == [f"ipv6-netfilter-{kver}.tcz"]
    pins = {p["key"]: p for p in lock["pins"]}
    image = cache.info(registry.build_image())
    recipe_releases = config.load([RECIPE]).recipe.releases
    assert set(pins) == {"iso", *(f"tcz/{n}" for n in names),
                         *(f"release/{n}" for n in recipe_releases), "kernel/config",
                         "kernel/source", f"image/{image['image']}"}
    assert pins.pop(f"image/{image['image']}")["sha256"] == \
        image["manifest"].removeprefix("sha256:")  # the registry's manifest digest
    for key, pin in pins.items():
        served = built.mirror / pin["url"].removeprefix(site["url"])
        assert pin["sha256"] == sha256_file(served), key
        if key.startswith("kernel/"):  # no .md5.txt beside the stand-in's kernel files
            assert pin["trusted"].startswith("trusted on first download"), pin["trusted"]
            continue
        kind = "md5" if key == "iso" or key.startswith("tcz/") else "sha256"
        assert pin["trusted"].startswith(f"{kind} from {site['url']}"), pin["trusted"]
    fetched = pipeline(site, "fetch", "--locked")
    assert fetched.returncode == 0, fetched.stderr
    inputs = json.loads((site["tmp"] / "build" / "fetch" / "inputs.json").read_text())
    assert len(inputs["inputs"]) == len(pins)  # images are pulled by the extensions stage


def test_range_requests_get_206(built, site):
    name = f"{mirror.RELEASE_DIR}/tcz/iptables.tcz"
    data = (built.mirror / name).read_bytes()

    def get(header):
        req = urllib.request.Request(site["url"] + name, headers={"Range": header} if header
                                     else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()

    status, headers, body = get("bytes=100-199")
    assert (status, body) == (206, data[100:200])
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert get("bytes=-10")[::2] == (206, data[-10:])
    assert get(f"bytes={len(data) - 5}-")[::2] == (206, data[-5:])
    status, headers, body = get(None)
    assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
    with pytest.raises(urllib.error.HTTPError) as err:
        get(f"bytes={len(data)}-")
    assert err.value.code == 416


def test_parse_range():
    assert standin_server.parse_range("bytes=0-0", 10) == (0, 0)
    assert standin_server.parse_range("bytes=5-", 10) == (5, 9)
    assert standin_server.parse_range("bytes=5-100", 10) == (5, 9)
    assert standin_server.parse_range("bytes=-3", 10) == (7, 9)
    assert standin_server.parse_range("bytes=0-1,4-5", 10) is None  # several: whole file
    assert standin_server.parse_range(None, 10) is None
    assert standin_server.parse_range("bytes=10-", 10) == "unsatisfiable"


# -- what is inside the extensions -------------------------------------------------------


def listing(path: Path) -> dict[str, str]:
    """unsquashfs -lln: path inside the extension -> 'mode owner [-> target]'."""
    out = run("unsquashfs", "-lln", path).stdout
    entries = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("squashfs-root/"):
            entries[fields[5].removeprefix("squashfs-root/")] = " ".join(fields[:2] + fields[6:])
    return entries


def test_iptables_is_legacy_and_needs_netfilter(built):
    files = listing(tcz(built, "iptables.tcz"))
    assert files["usr/local/sbin/xtables-legacy-multi"].startswith("-rwxr-xr-x 0/0")
    for name in ("iptables", "iptables-save", "iptables-restore"):
        assert files[f"usr/local/sbin/{name}"].endswith("-> xtables-legacy-multi")
    for plugin in ("libxt_MASQUERADE.so", "libxt_conntrack.so", "libxt_comment.so"):
        assert f"{extensions.XTABLES_DIR}/{plugin}" in files
    assert "usr/local/lib/libxtables.so.12" in files
    assert files["usr/local/tce.installed/iptables"].startswith("-rwxrwxr-x 0/50")  # mkdir /run
    assert tcz(built, "iptables.tcz.dep").read_text() == "ipv6-netfilter-KERNEL.tcz\n"


def test_module_extensions_carry_modules_where_tiny_core_does(built):
    """tinycorelinux/sorter sorter.sh @ bf13d13: gzipped modules, one group per extension."""
    kver = built.kernel.release
    base = f"usr/local/lib/modules/{kver}/kernel"
    netfilter = listing(tcz(built, f"ipv6-netfilter-{kver}.tcz"))
    for rel in ("net/netfilter/nf_conntrack.ko.gz", "net/netfilter/nf_nat.ko.gz",
                "net/netfilter/xt_MASQUERADE.ko.gz", "net/netfilter/xt_conntrack.ko.gz",
                "net/ipv4/netfilter/iptable_nat.ko.gz", "net/ipv4/netfilter/nf_defrag_ipv4.ko.gz",
                "net/ipv6/ipv6.ko.gz"):
        assert f"{base}/{rel}" in netfilter, rel
    bridging = listing(tcz(built, f"net-bridging-{kver}.tcz"))
    names = {module_extensions.module_name(p) for p in bridging if p.endswith(".ko.gz")}
    assert names == {"bridge", "br_netfilter"}
    assert not [p for p in {**netfilter, **bridging} if p.endswith(".ko")]  # all gzipped
    parents = ("usr", "usr/local", "usr/local/lib", "usr/local/lib/modules")
    assert all(p.startswith(f"usr/local/lib/modules/{kver}") or p in parents
               for p in {**netfilter, **bridging})
    # veth, stp and llc stay in the base initramfs: no extension carries them
    served = sorted(tcz(built, "").glob(f"*-{kver}.tcz"))
    carried = {module_extensions.module_name(p) for ext in served for p in listing(ext)
               if ".ko" in p}
    assert not carried & {"veth", "stp", "llc", "virtio_blk", "e1000", "loop", "squashfs"}


def test_original_modules_is_an_empty_meta_extension_and_there_is_no_netfilter_kernel(built):
    kver = built.kernel.release
    meta = f"original-modules-{kver}.tcz"
    assert set(listing(tcz(built, meta))) == {"lib"}  # sorter: an empty squashfs with lib/
    assert tcz(built, f"{meta}.list").read_text().strip() == ""
    others = sorted(p.name.replace(kver, "KERNEL") for p in tcz(built, "").glob(f"*-{kver}.tcz")
                    if p.name != meta)
    assert {"ipv6-netfilter-KERNEL.tcz", "net-bridging-KERNEL.tcz"} <= set(others)
    assert tcz(built, f"{meta}.dep").read_text().split() == others
    assert not tcz(built, f"netfilter-{kver}.tcz").exists()  # 11.x has none


def test_openssh_syslinux_e2fsprogs_carry_what_the_install_needs(built):
    ssh = listing(tcz(built, "openssh.tcz"))
    for path in ("usr/local/sbin/dropbear", "usr/local/bin/scp", "usr/local/bin/dropbearkey",
                 "usr/local/lib/openssh/sftp-server", "usr/local/etc/init.d/openssh"):
        assert ssh[path].startswith("-rwxr-xr-x 0/0"), path
    assert ssh["usr/local/tce.installed"].startswith("drwxrwxr-x 0/50")
    assert ssh["usr/local/tce.installed/openssh"].startswith("-rwxrwxr-x 0/50")
    assert ssh["usr/lib/sftp-server"].endswith("-> /usr/local/lib/openssh/sftp-server")
    syslinux = listing(tcz(built, "syslinux.tcz"))
    assert {"usr/local/sbin/extlinux", "usr/local/share/syslinux/mbr.bin",
            "usr/local/share/syslinux/menu.c32", "usr/local/share/syslinux/libutil.c32"} <= set(
        syslinux)
    e2fs = listing(tcz(built, "e2fsprogs.tcz"))
    assert e2fs["usr/local/sbin/mkfs.ext4"].endswith("-> mke2fs")
    assert {"usr/local/sbin/mke2fs", "usr/local/sbin/e2fsck", "usr/local/sbin/tune2fs",
            "usr/local/sbin/resize2fs", "etc/mke2fs.conf"} <= set(e2fs)
    listed = tcz(built, "e2fsprogs.tcz.list").read_text().splitlines()
    assert listed == sorted(p for p, v in e2fs.items() if not v.startswith("d"))


def unpack(path: Path, dest: Path) -> Path:
    run("unsquashfs", "-f", "-d", dest, path).check_returncode()
    return dest


def test_extension_binaries_use_tiny_cores_interpreter(built, tmp_path):
    for name in BINARY_EXTENSIONS:
        tree = unpack(tcz(built, name), tmp_path / name)
        interps = {p: debfiles.elf_interpreter(p) for p in tree.rglob("*")
                   if p.is_file() and not p.is_symlink() and debfiles.is_elf(p)}
        programs = [p for p, i in interps.items() if i]
        assert programs, name
        for path in programs:
            shown = run("patchelf", "--print-interpreter", path).stdout.strip()
            assert shown == INTERP, path


def test_release_binaries_keep_lib64(built, tmp_path):
    info = json.loads((built.releases / "info.json").read_text())["releases"]

    def asset(name):
        return built.mirror / info[name]["folder"] / info[name]["asset"]

    with tarfile.open(asset("containerd")) as tar:
        assert {"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"} <= set(tar.getnames())
        tar.extractall(tmp_path / "containerd", filter="data")
    with tarfile.open(asset("cni-plugins")) as tar:
        assert {"./bridge", "./host-local", "./loopback", "./firewall", "./portmap"} <= set(
            tar.getnames())
        tar.extractall(tmp_path / "cni", filter="data")
    binaries = [tmp_path / "containerd/bin/containerd", tmp_path / "containerd/bin/ctr",
                tmp_path / "cni/bridge", asset("runc")]
    for path in binaries:
        assert run("patchelf", "--print-interpreter", path).stdout.strip() == LIB64_INTERP


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_extension_binaries_run_with_glibc_in_lib_only(built, tmp_path):
    """A root shaped like Tiny Core's: glibc in /lib, no /lib64, /usr/local/lib in
    ld.so.conf; the extensions unpacked into it. Their programs must start there."""
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    for path in extensions.glibc_files(quiet()):
        if path.parent.name == "x86_64-linux-gnu" and ".so" in path.name:
            shutil.copy(path, root / "lib" / path.name)
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/usr/local/lib\n")
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # scp opens it
    for name in BINARY_EXTENSIONS:
        unpack(tcz(built, name), root)
    run("ldconfig", "-r", root).check_returncode()
    assert not (root / "lib64").exists()
    checks = {("/usr/local/sbin/iptables", "--version"): "(legacy)",
              ("/usr/local/sbin/mke2fs", "-V"): "mke2fs 1.",
              ("/usr/local/sbin/dropbear", "-V"): "Dropbear",
              ("/usr/local/sbin/extlinux", "--version"): "extlinux",
              ("/usr/local/bin/scp", "-h"): "usage: scp"}
    for argv, expected in checks.items():
        result = run("chroot", root, *argv)
        assert expected in result.stdout + result.stderr, (argv, result)


def test_kernel_source_and_config_are_served(built):
    folder = built.mirror / mirror.RELEASE_DIR / "release" / "src" / "kernel"
    source = folder / releases.kernel_source_name(built.kernel.release)
    assert source.name == f"linux-{built.kernel.release.split('-')[0]}-patched.txz"
    with open(source, "rb") as fh:
        assert fh.read(6) == b"\xfd7zXZ\x00"  # a .txz, as tc11's linux-5.4.3-patched.txz
    # not Debian's bytes: the served tree carries tc11's pre-fix libsubcmd (kernel_source.py;
    # tests/tools/test_kernel_stage.py proves the stage then builds it with gcc-11)
    assert source.stat().st_size != releases.KERNEL_SOURCE_TARBALL.stat().st_size
    config_file = folder / f"config-{built.kernel.release}"
    assert config_file.read_bytes() == built.kernel.config.read_bytes()


def test_repacked_tarballs_are_deterministic(tmp_path):
    src = tmp_path / "tool"
    src.write_bytes(b"\x7fELF tool")
    for name in ("a.tgz", "b.tgz"):
        os.utime(src, (time.time(), time.time()))
        releases.deterministic_tgz(tmp_path / name, [("bin/", None), ("bin/tool", src)], 1)
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()


# -- the doubles and the registry --------------------------------------------------------

DOUBLES = REPO / "tests" / "standin" / "doubles"


def test_shell_passes_shellcheck():
    scripts = [DOUBLES / "faasd", DOUBLES / "faas-cli",
               *sorted(p for p in extensions.FILES_DIR.rglob("*") if p.is_file())]
    result = run("shellcheck", "-s", "sh", *scripts)
    assert result.returncode == 0, result.stdout


def fake_ctr(tmp_path: Path, overlayfs: str) -> Path:
    ctr = tmp_path / "ctr"
    ctr.write_text(
        "#!/bin/sh\ncase \"$1\" in\nversion) echo 'Server: fake' ;;\n"
        "plugins) echo 'TYPE ID PLATFORMS STATUS'\n"
        f"  echo 'io.containerd.snapshotter.v1 overlayfs linux/amd64 {overlayfs}' ;;\nesac\n")
    ctr.chmod(0o755)
    return ctr


def double(tmp_path, ctr: Path, *args, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "FAASD_DOUBLE_CTR": str(ctr), "FAASD_DOUBLE_CONTAINERD_WAIT_S": "2",
            **env}
    return run("sh", DOUBLES / "faasd", *args, cwd=tmp_path, env=full)


def test_faasd_double_refuses_without_overlayfs(tmp_path):
    result = double(tmp_path, fake_ctr(tmp_path, "skip"), "provider", port=str(free_port()))
    assert result.returncode == 1 and "overlayfs" in result.stderr
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    result = double(tmp_path, fake_ctr(tmp_path, "error"), "up")
    assert result.returncode == 1 and "overlayfs" in result.stderr
    (tmp_path / "empty").mkdir()
    result = double(tmp_path / "empty", fake_ctr(tmp_path, "ok"), "up")
    assert result.returncode == 1 and "docker-compose.yaml" in result.stderr
    secrets = double(tmp_path, fake_ctr(tmp_path, "ok"), "provider", basic_auth="true",
                     secret_mount_path=str(tmp_path))
    assert secrets.returncode == 1 and "basic-auth-user" in secrets.stderr
    version = run("sh", DOUBLES / "faas-cli", "version")
    assert "0.0.0-double" in version.stdout


def wait_healthz(url: str, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status
        except OSError:
            time.sleep(0.3)
    return 0


def start(argv, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(a) for a in argv], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def provider_health(tmp_path: Path, ctr: Path) -> int:
    """Start `faasd provider` (the double) on a free port; the status of its /healthz."""
    port = free_port()
    env = {**os.environ, "FAASD_DOUBLE_CTR": str(ctr), "port": str(port)}
    proc = start(["sh", DOUBLES / "faasd", "provider"], cwd=tmp_path, env=env)
    try:
        return wait_healthz(f"http://127.0.0.1:{port}/healthz")
    finally:
        kill_group(proc)


def test_faasd_double_provider_serves_healthz(tmp_path):
    assert provider_health(tmp_path, fake_ctr(tmp_path, "ok")) == 200




def test_faasd_double_gateway_needs_the_basic_auth_of_its_secrets(tmp_path):
    # as faasd's gateway: /system/* behind the secrets' basic auth, /healthz open
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "basic-auth-user").write_text("admin")
    (tmp_path / "secrets" / "basic-auth-password").write_text("s3cret:with-colon")
    port = free_port()
    env = {**os.environ, "FAASD_DOUBLE_CTR": str(fake_ctr(tmp_path, "ok")),
           "FAASD_DOUBLE_PORT": str(port)}
    proc = start(["sh", DOUBLES / "faasd", "up"], cwd=tmp_path, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_healthz(f"{base}/healthz") == 200
        assert http_status(f"{base}/system/functions") == 401
        assert http_status(f"{base}/system/functions", "admin:wrong") == 401
        assert http_status(f"{base}/system/functions", "admin:s3cret:with-colon") == 200
    finally:
        kill_group(proc)


@pytest.fixture
def containerd(tmp_path):
    """A private containerd (root only): its own root, state and socket under tmp_path."""
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    base = tmp_path / "containerd"
    base.mkdir()
    conf = base / "config.toml"
    conf.write_text(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{base}/containerd.sock"\n')
    proc = start(["containerd", "--config", conf])
    ctr = base / "ctr"
    ctr.write_text(f'#!/bin/sh\nexec ctr --address "{base}/containerd.sock" "$@"\n')
    ctr.chmod(0o755)
    try:
        deadline = time.monotonic() + 15
        while run(ctr, "version").returncode != 0:
            assert time.monotonic() < deadline, "private containerd did not start"
            time.sleep(0.3)
        yield ctr
    finally:
        kill_group(proc)


def test_registry_serves_the_image_and_ctr_imports_the_archive(built, tmp_path, containerd):
    image_info = json.loads((built.image / "info.json").read_text())
    with registry.Registry(free_port(), tmp_path / "registry", quiet()) as reg:
        tags = urllib.request.urlopen(f"http://{reg.address}/v2/{registry.REPOSITORY}/tags/list")
        assert json.loads(tags.read())["tags"] == [image_info["tag"]]
        pulled = run(containerd, "image", "pull", "--plain-http",
                     f"{reg.address}/{registry.REPOSITORY}:{image_info['tag']}")
        assert pulled.returncode == 0, pulled.stderr
    imported = run(containerd, "image", "import", built.image / "busybox.oci.tar")
    assert imported.returncode == 0, imported.stderr
    images = run(containerd, "image", "ls", "-q").stdout.split()
    assert image_info["image"] in images
    listed = run(containerd, "image", "ls").stdout
    assert image_info["manifest"] in listed


def test_faasd_double_accepts_a_real_containerd_with_overlayfs(tmp_path, containerd):
    plugins = run(containerd, "plugins", "ls").stdout
    if not any(line.split()[:2] == ["io.containerd.snapshotter.v1", "overlayfs"]
               and line.split()[-1] == "ok" for line in plugins.splitlines() if line.strip()):
        pytest.skip("this host's containerd has no working overlayfs snapshotter")
    assert provider_health(tmp_path, containerd) == 200


def test_oci_image_is_deterministic():
    busybox = b"\x7fELF busybox"
    assert registry.oci_blobs(busybox, "1", 5) == registry.oci_blobs(busybox, "1", 5)
    blobs, index = registry.oci_blobs(busybox, "1", 5)
    assert registry.oci_archive(blobs, index, 5) == registry.oci_archive(blobs, index, 5)
    for digest, blob in blobs.items():
        assert digest == f"sha256:{hashlib.sha256(blob).hexdigest()}"
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == f"{registry.IMAGE_NAME}:1"


def test_a_busy_port_is_one_clear_error(tmp_path):
    """`make demo` next to another demo: a message naming the port, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PipelineError, match=f"cannot listen on 127.0.0.1:{port}") as err:
            standin_server.make_server(tmp_path, port)
        assert "STANDIN_PORT" in err.value.hint
