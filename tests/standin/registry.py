"""The stand-in's container registry and its one image, for the image-pull path.

Debian's `docker-registry` (distribution 2.8) runs on 127.0.0.1 with its own config file and
its storage under the cache. The image is busybox-static in a single layer, built here in
Python as an OCI image layout whose bytes depend only on the busybox package (fixed mtimes,
root owner, deterministic gzip), pushed with `skopeo copy`; the same layout is kept as an
OCI archive that `ctr image import` accepts (it names the image through the
`io.containerd.image.name` annotation), so the appliance can also import it offline.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

from appliance.errors import ToolError
from appliance.run import Runner, format_argv, kill_group, require_tool
from tests.standin import cache, debfiles

HERE = Path(__file__).resolve().parent
DEFAULT_PORT = 8912
REPOSITORY = "standin/busybox"
IMAGE_NAME = "docker.io/standin/busybox"  # what `ctr image import` of the archive creates
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "true", "false", "id", "hostname", "wget")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
READY_TIMEOUT_S = 15.0


def _json_bytes(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]], epoch: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _entry(name: str, kind: bytes, mode: int, data: bytes | None = None,
           target: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, target
    info.size = len(data) if data is not None else 0
    return info, data


def layer_tar(busybox: bytes, epoch: int) -> bytes:
    """The image's only layer: /bin/busybox, a few applet links, an empty /tmp."""
    entries = [_entry("bin", tarfile.DIRTYPE, 0o755),
               _entry("bin/busybox", tarfile.REGTYPE, 0o755, busybox)]
    entries += [_entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, target="busybox") for a in APPLETS]
    entries.append(_entry("tmp", tarfile.DIRTYPE, 0o1777))
    return _tar_bytes(entries, epoch)


def _gzip(data: bytes, epoch: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=epoch, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
            "size": len(blob)}


def oci_blobs(busybox: bytes, tag: str, epoch: int) -> tuple[dict[str, bytes], dict]:
    """Every blob of the image by digest, and the OCI index that names it (pure)."""
    layer = layer_tar(busybox, epoch)
    layer_gz = _gzip(layer, epoch)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    config = _json_bytes({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
        "history": [{"created": created, "created_by": "tests/standin/registry.py"}],
    })
    manifest = _json_bytes({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)],
    })
    index = {"schemaVersion": 2, "manifests": [{
        **_descriptor(MANIFEST_TYPE, manifest),
        "annotations": {"io.containerd.image.name": f"{IMAGE_NAME}:{tag}",
                        "org.opencontainers.image.ref.name": tag}}]}
    blobs = {_descriptor("", b)["digest"]: b for b in (layer_gz, config, manifest)}
    return blobs, index


def write_layout(root: Path, blobs: dict[str, bytes], index: dict) -> None:
    (root / "blobs" / "sha256").mkdir(parents=True)
    for digest, blob in blobs.items():
        (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(blob)
    (root / "index.json").write_bytes(_json_bytes(index))
    (root / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))


def oci_archive(blobs: dict[str, bytes], index: dict, epoch: int) -> bytes:
    """The layout as one tar, the form `ctr image import` reads."""
    entries = [_entry("oci-layout", tarfile.REGTYPE, 0o644,
                      _json_bytes({"imageLayoutVersion": "1.0.0"})),
               _entry("index.json", tarfile.REGTYPE, 0o644, _json_bytes(index)),
               _entry("blobs", tarfile.DIRTYPE, 0o755),
               _entry("blobs/sha256", tarfile.DIRTYPE, 0o755)]
    entries += [_entry(f"blobs/sha256/{d.removeprefix('sha256:')}", tarfile.REGTYPE, 0o644, b)
                for d, b in sorted(blobs.items())]
    return _tar_bytes(entries, epoch)


def build_image(runner: Runner | None = None) -> Path:
    """The cached image: layout/ (for skopeo) and busybox.oci.tar (for ctr image import)."""
    runner = runner or Runner(cache.component_dir("logs"), echo=lambda line: None)
    version = debfiles.versions(runner, ["busybox-static"], transitive=False)["busybox-static"]
    tag = debfiles.upstream_version(version)
    epoch = debfiles.source_date_epoch()
    material = {"busybox-static": version, "epoch": epoch,
                "code": cache.digest_files([HERE / "registry.py"])}

    def build(work: Path) -> dict:
        busybox = debfiles.find_files(runner, "busybox-static", "/bin/busybox")[0].read_bytes()
        blobs, index = oci_blobs(busybox, tag, epoch)
        write_layout(work / "layout", blobs, index)
        (work / "busybox.oci.tar").write_bytes(oci_archive(blobs, index, epoch))
        return {"tag": tag, "image": f"{IMAGE_NAME}:{tag}", "repository": REPOSITORY,
                "manifest": index["manifests"][0]["digest"]}

    return cache.cached_build("image", material, build)


def config_text(port: int, storage: Path) -> str:
    """docker-registry's config: loopback only, no auth, quiet (pure)."""
    return (
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )


class Registry:
    """docker-registry on 127.0.0.1:port, in its own process group, with the image pushed.

    A long-running child: the Runner only runs commands to completion, so this follows its
    conventions by hand (`+ cmd`, a log file, own session, kill_group on stop)."""

    def __init__(self, port: int, state_dir: Path, runner: Runner | None = None):
        self.port, self.state_dir = port, state_dir
        self.runner = runner or Runner(cache.component_dir("logs"), echo=lambda line: None)
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / f"config-{self.port}.yml"
        conf.write_text(config_text(self.port, self.state_dir / "storage"))
        argv = [require_tool("docker-registry"), "serve", str(conf)]
        log_path = cache.component_dir("logs") / "registry.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.runner.echo(f"+ {format_argv(argv)}")
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(log_path)
        self.push()
        return self

    def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise ToolError(f"docker-registry exited with {self.proc.returncode}",
                                f"see {log_path}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ToolError(f"docker-registry did not answer on {self.address} within "
                        f"{READY_TIMEOUT_S:g} s", f"see {log_path}")

    def push(self) -> str:
        """Push the stand-in image (idempotent); returns its reference in this registry."""
        image = build_image(self.runner)
        tag = cache.info(image)["tag"]
        ref = f"{self.address}/{REPOSITORY}:{tag}"
        # --insecure-policy: a loopback push of our own image must not depend on the host's
        # /etc/containers/policy.json.
        self.runner.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                         f"oci:{image / 'layout'}:{tag}", f"docker://{ref}"], log="registry")
        return ref

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def default_port() -> int:
    return int(os.environ.get("STANDIN_REGISTRY_PORT", DEFAULT_PORT))


def answers(port: int) -> bool:
    """Does a registry answer on 127.0.0.1:port (its /v2/ endpoint)?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


_kept: list[Registry] = []


def ensure_running() -> int:
    """A registry holding the stand-in image, for the rest of this process: the one on
    default_port() if it answers (the image is pushed to it again, which is idempotent),
    else one started on a free port, exported as STANDIN_REGISTRY_PORT so that recipe
    overlays (mirror.overlay_text) name it. Returns its port."""
    port = default_port()
    if answers(port):
        Registry(port, cache.component_dir("registry")).push()
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reg = Registry(port, cache.component_dir("registry")).start()
    _kept.append(reg)
    atexit.register(reg.stop)
    os.environ["STANDIN_REGISTRY_PORT"] = str(port)
    return port
