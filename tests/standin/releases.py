"""The stand-in's release downloads, in upstream's asset layout and names.

GitHub's `<owner>/<repo>/releases/download/<tag>/<asset>` is served under `github/`:
containerd, runc and the CNI plugins are Debian's binaries repacked the way upstream ships
them (deterministic tarballs, each with its checksum file); their ELF interpreter stays
/lib64/ld-linux-x86-64.so.2, so the appliance's `lib64 -> lib` fix is exercised. faasd and
faas-cli are test doubles (doubles/README.md). `release/src/kernel/` holds Debian's kernel
source (with tc11's pre-fix libsubcmd put back: kernel_source.py) and the stand-in kernel's
config, as tc11's mirror holds linux-5.4.3-patched.txz and config-5.4.3-tinycore64. Versions are Debian's upstream versions (1.6.20~ds1-1 -> 1.6.20).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from appliance.fetch import sha256_file
from appliance.run import Runner
from tests.standin import cache, debfiles, kernel_source

HERE = Path(__file__).resolve().parent
DOUBLES = HERE / "doubles"
DOUBLE_VERSION = "0.0.0-double"
BUILDER_VERSION = "2"
KERNEL_SOURCE_PACKAGE = "linux-source-6.1"
KERNEL_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
CONTAINERD_BINARIES = ("containerd", "containerd-shim", "containerd-shim-runc-v1",
                       "containerd-shim-runc-v2", "ctr")  # upstream's bin/ minus containerd-stress


@dataclass(frozen=True)
class Release:
    """One upstream release: where GitHub has it, as templates over {version} (and {asset})."""

    name: str  # the recipe's releases.<name>
    repo: str
    package: str  # the Debian package it is made from ("" for a double)
    tag: str
    asset: str
    checksum: str

    def version(self, debian_versions: dict[str, str]) -> str:
        if not self.package:
            return DOUBLE_VERSION
        return debfiles.upstream_version(debian_versions[self.package])

    def folder(self, version: str) -> str:
        return f"github/{self.repo}/releases/download/{self.tag.format(version=version)}"

    def asset_name(self, version: str) -> str:
        return self.asset.format(version=version)

    def checksum_name(self, version: str) -> str:
        return self.checksum.format(version=version, asset=self.asset_name(version))


RELEASES = {r.name: r for r in (
    Release("containerd", "containerd/containerd", "containerd", "v{version}",
            "containerd-{version}-linux-amd64.tar.gz", "{asset}.sha256sum"),
    Release("runc", "opencontainers/runc", "runc", "v{version}", "runc.amd64",
            "runc.sha256sum"),
    Release("cni-plugins", "containernetworking/plugins", "containernetworking-plugins",
            "v{version}", "cni-plugins-linux-amd64-v{version}.tgz", "{asset}.sha256"),
    Release("faasd", "openfaas/faasd", "", "{version}", "faasd", "{asset}.sha256"),
    Release("faas-cli", "openfaas/faas-cli", "", "{version}", "faas-cli", "{asset}.sha256"),
)}
FAASD_EXTRAS = ("docker-compose.yaml", "prometheus.yml")  # served beside the faasd double


def kernel_source_name(kernel_release: str) -> str:
    """tc11 serves linux-5.4.3-patched.txz; the stand-in linux-6.1.N-patched.txz (note: its
    top folder is Debian's `linux-source-6.1/`, not `linux-6.1.N/`)."""
    return f"linux-{kernel_release.split('-', 1)[0]}-patched.txz"


def write_checksum(path: Path, *assets: Path) -> None:
    """sha256sum's format: `<hex>  <name>` per asset."""
    path.write_text("".join(f"{sha256_file(a)}  {a.name}\n" for a in assets))


def deterministic_tgz(out: Path, members: list[tuple[str, Path | None]], epoch: int) -> None:
    """A .tar.gz whose bytes depend only on the members: fixed mtime, root owner, no names.

    members: (name in the archive, source file) in archive order; None makes a folder."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, src in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            if src is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.size, info.mode = src.stat().st_size, 0o755
            with open(src, "rb") as fh:
                tar.addfile(info, fh)
    # level 6: gzip's default; 9 takes twice as long on 150 MB of Go binaries for 1 % less
    with open(out, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=epoch,
                                              compresslevel=6) as gz:
        gz.write(raw.getvalue())


def link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink (a 140 MB kernel tarball is not worth copying), copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _containerd(runner: Runner, folder: Path, rel: Release, version: str) -> list[Path]:
    files = {p.name: p for p in debfiles.find_files(runner, "containerd", "/usr/bin/*")}
    members: list[tuple[str, Path | None]] = [("bin/", None)]
    members += [(f"bin/{name}", files[name]) for name in CONTAINERD_BINARIES]
    out = folder / rel.asset_name(version)
    deterministic_tgz(out, members, debfiles.source_date_epoch())
    return [out]


def _runc(runner: Runner, folder: Path, rel: Release, version: str) -> list[Path]:
    out = folder / rel.asset_name(version)
    shutil.copyfile(debfiles.find_files(runner, "runc", "/usr/sbin/runc")[0], out)
    out.chmod(0o755)
    return [out]


def _cni(runner: Runner, folder: Path, rel: Release, version: str) -> list[Path]:
    plugins = debfiles.find_files(runner, "containernetworking-plugins", "/usr/lib/cni/*")
    members: list[tuple[str, Path | None]] = [("./", None)]
    members += [(f"./{p.name}", p) for p in plugins]
    out = folder / rel.asset_name(version)
    deterministic_tgz(out, members, debfiles.source_date_epoch())
    return [out]


def _double(_runner: Runner, folder: Path, rel: Release, version: str) -> list[Path]:
    out = folder / rel.asset_name(version)
    shutil.copyfile(DOUBLES / rel.name, out)
    out.chmod(0o755)
    if rel.name == "faasd":  # the files faasd's install.sh fetches beside the binary
        for extra in FAASD_EXTRAS:
            shutil.copyfile(DOUBLES / extra, folder / extra)
            write_checksum(folder / f"{extra}.sha256", folder / extra)
    return [out]


MAKERS = {"containerd": _containerd, "runc": _runc, "cni-plugins": _cni,
          "faasd": _double, "faas-cli": _double}


def build_kernel_source(root: Path, kernel) -> dict:
    """release/src/kernel/: Debian's source tarball (with tc11's old libsubcmd) and the
    stand-in's config."""
    folder = root / "release" / "src" / "kernel"
    folder.mkdir(parents=True)
    source = folder / kernel_source_name(kernel.release)
    # tc11's tree has the old objtool that GCC >= 12 fails on: kernel_source.py
    kernel_source.write_old_objtool_tree(KERNEL_SOURCE_TARBALL, source)
    shutil.copyfile(kernel.config, folder / f"config-{kernel.release}")
    return {"kernel_source": source.name, "kernel_config": f"config-{kernel.release}"}


def key_material(runner: Runner, kernel) -> dict:
    packages = [r.package for r in RELEASES.values() if r.package] + [KERNEL_SOURCE_PACKAGE]
    return {
        "builder": BUILDER_VERSION,
        "packages": debfiles.versions(runner, packages, transitive=False),
        "code": cache.digest_files([HERE / "releases.py", HERE / "debfiles.py",
                                   HERE / "kernel_source.py", DOUBLES]),
        "kernel": {"release": kernel.release,
                   "config": hashlib.sha256(kernel.config.read_bytes()).hexdigest()},
        "source_date_epoch": debfiles.source_date_epoch(),
    }


def build_releases(kernel, runner: Runner | None = None) -> Path:
    """The cached folder holding github/... and release/src/kernel/ (see the module doc)."""
    runner = runner or Runner(cache.component_dir("logs"), echo=lambda line: None)
    material = key_material(runner, kernel)

    def build(work: Path) -> dict:
        made = {}
        for rel in RELEASES.values():
            version = rel.version(material["packages"])
            folder = work / rel.folder(version)
            folder.mkdir(parents=True)
            assets = MAKERS[rel.name](runner, folder, rel, version)
            write_checksum(folder / rel.checksum_name(version), *assets)
            made[rel.name] = {"version": version, "folder": rel.folder(version),
                              "asset": rel.asset_name(version),
                              "checksum": rel.checksum_name(version),
                              "bytes": assets[0].stat().st_size}
        return {"releases": made, **build_kernel_source(work, kernel)}

    return cache.cached_build("releases", material, build)


def versions(runner: Runner) -> dict[str, str]:
    """releases.<name>.version for the stand-in recipe, from the installed packages."""
    packages = [r.package for r in RELEASES.values() if r.package]
    found = debfiles.versions(runner, packages, transitive=False)
    return {name: rel.version(found) for name, rel in RELEASES.items()}
