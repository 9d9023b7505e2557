"""A small upstream made in a test's tmp_path: a Tiny Core mirror tree (ISO, extensions with
.dep/.md5.txt) and release assets with .sha256 files, laid out like the real ones, plus a
recipe that points at it. Test data only; the stand-in for real builds is tests/standin/."""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path

from tests.standin import server

KERNEL = "5.4.3-tinycore64"
# name -> direct deps, as the .dep files say them
EXTENSIONS = {
    "openssh.tcz": ["openssl-1.1.1.tcz"],
    "openssl-1.1.1.tcz": [],
    "iptables.tcz": ["ipv6-netfilter-KERNEL.tcz"],
    f"ipv6-netfilter-{KERNEL}.tcz": [],
    f"net-bridging-{KERNEL}.tcz": [],
}


def write_with_md5(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    path.with_name(path.name + ".md5.txt").write_text(f"{md5}  {path.name}\n")


def make_tree(root: Path) -> dict[str, bytes]:
    """Lay out the upstream under `root`; returns file name -> bytes for assertions."""
    files: dict[str, bytes] = {}
    arch = root / "11.x" / "x86_64"
    files["CorePure64-11.1.iso"] = b"ISO" * 5000
    write_with_md5(arch / "release" / "CorePure64-11.1.iso", files["CorePure64-11.1.iso"])
    for name, deps in EXTENSIONS.items():
        files[name] = f"squashfs of {name}".encode() * 100
        write_with_md5(arch / "tcz" / name, files[name])
        if deps:
            (arch / "tcz" / f"{name}.dep").write_text("\n".join(deps) + "\n\n")
    src = arch / "release" / "src" / "kernel"
    files["config-5.4.3-tinycore64"] = b"CONFIG_MODULES=y\n# CONFIG_OVERLAY_FS is not set\n"
    write_with_md5(src / "config-5.4.3-tinycore64", files["config-5.4.3-tinycore64"])
    files["linux-5.4.3-patched.txz"] = b"kernel source tarball" * 100
    (src / "linux-5.4.3-patched.txz").write_bytes(files["linux-5.4.3-patched.txz"])  # no md5
    rel = root / "releases"
    rel.mkdir(parents=True)
    files["runc.amd64"] = b"\x7fELF runc" * 300
    (rel / "runc.amd64").write_bytes(files["runc.amd64"])
    digest = hashlib.sha256(files["runc.amd64"]).hexdigest()
    (rel / "runc.sha256sum").write_text(f"{'0' * 64}  runc.arm64\n{digest}  runc.amd64\n")
    return files


def recipe_text(base_url: str, extensions=("openssh", "iptables")) -> str:
    exts = ", ".join(f'"{e}"' for e in extensions)
    return f"""
name = "test-appliance"
[tinycore]
mirrors = ["{base_url}/missing-mirror/", "{base_url}/"]
guest_mirror = "http://10.0.2.2:8000/"
extensions = [{exts}]

[releases.runc]
version = "1.2.5"
url = "{base_url}/releases/runc.amd64"
checksum_url = "{base_url}/releases/runc.sha256sum"
"""


class SlowHandler(server.MirrorHandler):
    """The stand-in's handler, plus `/slow/NAME`: 1 KiB per 0.1 s, at most 60 s."""

    def do_GET(self) -> None:
        if not self.path.startswith("/slow/"):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(10 * 2**20))
        self.end_headers()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


@contextmanager
def serve(root: Path):
    """Serve `root` on 127.0.0.1 (a free port) for the block; yields the base URL."""
    with server.running(root, 0, SlowHandler) as url:
        yield url.rstrip("/")
