"""Container images for an offline start: pinned by digest, pulled with skopeo, archived for
`ctr image import`.

faasd does not pull an image that its `openfaas` namespace already holds, so the appliance
ships every image of the pinned docker-compose.yaml and imports them before `faasd up`.

- Pinning (`pipeline.py lock`): `skopeo inspect --raw` reads the image's manifest; for a
  multi-platform index the linux/amd64 entry is chosen. The pin is that manifest's digest
  (the sha256 of its bytes), so a tag that moves upstream cannot change the appliance.
- Pulling (extensions stage): `skopeo copy docker://REPO@sha256:D oci:LAYOUT` fetches exactly
  the pinned manifest (skopeo checks the digest of a by-digest reference and of every blob).
  An OCI layout holds only OCI manifests, so a Docker schema-2 image is converted on the way
  (same layer bytes, new manifest digest); the pin stays the registry's digest. Layouts are
  cached under `cache/images/<digest>/` and every blob is re-hashed before use.
- Archiving: the layout as one tar with fixed mtimes and owners (skopeo's own oci-archive
  writes the current time), its index.json naming the image through containerd's
  `io.containerd.image.name` annotation, which is what `ctr image import` names it by.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from appliance import log
from appliance.config import Image
from appliance.errors import FetchError, ToolError
from appliance.paths import cache_root
from appliance.run import Runner

PLATFORM = ("linux", "amd64")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
CONTAINERD_NAME = "io.containerd.image.name"
RETRIES = "3"  # skopeo's own retries for registry hiccups


def images_dir() -> Path:
    return cache_root() / "images"


def tls_args(image: Image, flag: str) -> list[str]:
    return [] if image.tls_verify else [f"{flag}=false"]


def inspect_argv(image: Image, *, raw: bool) -> list[str]:
    """Reads what a tag points to (pure): `--raw` the manifest or index as served; otherwise
    the digest of that document and the platform of the image skopeo would pick."""
    what = ["--raw"] if raw else ["--format", "{{.Digest}} {{.Os}}/{{.Architecture}}"]
    return ["skopeo", "inspect", *what, "--retry-times", RETRIES,
            *tls_args(image, "--tls-verify"), f"docker://{image.source_ref}"]


def copy_argv(image: Image, digest: str, layout: Path) -> list[str]:
    """Copies the pinned manifest into an OCI layout (pure). Integrity comes from the
    by-digest reference, so the host's signature policy (often absent) is not consulted."""
    return ["skopeo", "--insecure-policy", "copy", "--retry-times", RETRIES,
            *tls_args(image, "--src-tls-verify"),
            f"docker://{image.repository}@sha256:{digest}", f"oci:{layout}:{image.tag}"]


def _json_in(output: str, ref: str) -> dict:
    """The JSON document in skopeo's output (the runner interleaves stderr lines)."""
    start = output.find("{")
    try:
        return json.JSONDecoder().raw_decode(output[start:])[0] if start >= 0 else {}
    except ValueError:
        raise FetchError(f"image {ref}: the registry's manifest is not JSON") from None


def choose_digest(raw_output: str, inspect_line: str, ref: str) -> tuple[str, str]:
    """(sha256 hex of the linux/amd64 manifest, what vouched for it) from the two inspect
    answers (pure). The digest of a single manifest comes from skopeo, not from re-hashing
    output text, which the runner may have reflowed."""
    data = _json_in(raw_output, ref)
    found = re.search(r"sha256:([0-9a-f]{64}) (\S+)/(\S+)", inspect_line)
    if not found:
        raise FetchError(f"image {ref}: skopeo inspect printed no digest")
    top, platform = found.group(1), (found.group(2), found.group(3))
    if data.get("mediaType") not in INDEX_TYPES and "manifests" not in data:
        if platform != PLATFORM:
            raise FetchError(f"image {ref} is for {'/'.join(platform)}, not linux/amd64")
        return top, "manifest digest from the registry"
    offered = []
    for entry in data.get("manifests", []):
        plat = entry.get("platform", {})
        offered.append(f"{plat.get('os')}/{plat.get('architecture')}")
        digest = entry.get("digest", "")
        if (plat.get("os"), plat.get("architecture")) == PLATFORM and re.fullmatch(
                r"sha256:[0-9a-f]{64}", digest):
            return digest.removeprefix("sha256:"), f"linux/amd64 entry of index sha256:{top}"
    raise FetchError(f"image {ref}: no linux/amd64 manifest in its index (offers: "
                     f"{', '.join(sorted(set(offered))) or 'nothing'})")


def resolve_digest(image: Image, runner: Runner) -> tuple[str, str]:
    """The digest to pin for an image, and which registry answer vouched for it."""
    answers = []
    for raw in (True, False):
        result = runner.run(inspect_argv(image, raw=raw), log="lock", check=False)
        if result.returncode != 0:
            tail = "\n".join(f"    {line}" for line in result.output.splitlines()[-5:])
            raise FetchError(f"image {image.source_ref}: skopeo inspect failed:\n{tail}",
                             hint="check that the registry is reachable (the stand-in's: "
                                  "`python -m tests.standin serve`) and the image's tls_verify")
        answers.append(result.output)
    return choose_digest(answers[0], answers[1], image.source_ref)


def verify_layout(layout: Path) -> None:
    """Every blob's bytes match its file name (a cache entry is never trusted blindly)."""
    blobs = layout / "blobs" / "sha256"
    if not (layout / "index.json").is_file() or not blobs.is_dir():
        raise FetchError(f"{layout}: not an OCI image layout")
    for blob in sorted(blobs.iterdir()):
        h = hashlib.sha256()
        with open(blob, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != blob.name:
            raise FetchError(f"{blob}: content does not match its digest",
                             hint=f"delete {layout.parent} and build again")


def layout_manifest(layout: Path) -> str:
    """The digest (sha256:...) of the one manifest the layout's index.json names."""
    try:
        manifests = json.loads((layout / "index.json").read_text()).get("manifests", [])
    except (OSError, ValueError, AttributeError):
        manifests = None
    if not isinstance(manifests, list) or len(manifests) != 1 \
            or not isinstance(manifests[0], dict):
        raise FetchError(f"{layout}/index.json: expected one manifest",
                         hint=f"delete {layout.parent} and build again")
    return str(manifests[0].get("digest", ""))


def verify_pinned(entry: Path, digest: str) -> Path:
    """A cached entry holds the pinned image: its blobs match their names and its index.json
    names the pinned manifest, or the OCI conversion of it that skopeo wrote when it was
    pulled by that digest (recorded in source.json at the pull). Re-hashing blobs alone would
    accept an index.json edited to point at another image whose blobs are also present."""
    layout = entry / "layout"
    verify_layout(layout)
    named = layout_manifest(layout)
    try:
        source = json.loads((entry / "source.json").read_text())
    except (OSError, ValueError):
        source = {}
    accepted = {f"sha256:{digest}"}
    if isinstance(source, dict) and source.get("digest") == f"sha256:{digest}":
        accepted.add(str(source.get("layout_manifest", "")))
    if named not in accepted or not (layout / "blobs" / "sha256" /
                                     named.removeprefix("sha256:")).is_file():
        raise FetchError(f"{layout}/index.json names {named or 'no digest'}, not the pinned "
                         f"sha256:{digest}", hint=f"delete {entry} and build again")
    return layout


def pull(image: Image, digest: str, runner: Runner, *, offline: bool) -> Path:
    """The OCI layout of the pinned image, from the cache or pulled into it."""
    entry = images_dir() / digest
    layout = entry / "layout"
    if layout.is_dir():
        return verify_pinned(entry, digest)
    if offline:
        raise FetchError(f"image {image.name} (sha256:{digest}) is not in the image cache "
                         "and --offline was given", hint="run without --offline to pull it")
    shutil.rmtree(entry, ignore_errors=True)  # a damaged entry without its layout
    tmp = images_dir() / f".{digest}.{os.getpid()}.tmp"  # concurrent builds pull apart
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        runner.run(copy_argv(image, digest, tmp / "layout"), log="extensions")
    except ToolError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ToolError(f"image {image.name}: pull of sha256:{digest} from "
                        f"{image.repository} failed\n{exc.message}",
                        "check the registry is reachable, or build with a warm cache") from None
    verify_layout(tmp / "layout")
    # skopeo fetched exactly the pinned digest; a Docker schema-2 manifest became an OCI
    # one on the way, whose digest is recorded so a cache hit can check index.json.
    (tmp / "source.json").write_text(json.dumps(
        {"name": image.name, "source": image.source_ref, "digest": f"sha256:{digest}",
         "layout_manifest": layout_manifest(tmp / "layout")}, indent=2) + "\n")
    try:
        tmp.rename(entry)
    except OSError:  # another build put the same digest there first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    log.detail(f"pulled {image.name} (sha256:{digest})")
    return layout


def named_index(index: dict, name: str) -> dict:
    """index.json with the image's name where `ctr image import` looks for it (pure)."""
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise FetchError(f"{name}: expected one manifest in the pulled layout, "
                         f"found {len(manifests)}")
    entry = dict(manifests[0])
    entry["annotations"] = {**entry.get("annotations", {}), CONTAINERD_NAME: name}
    return {**index, "manifests": [entry]}


def _member(name: str, data: bytes | None, epoch: int) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = len(data), 0o644
    return info, data


def write_archive(layout: Path, name: str, out: Path, epoch: int) -> Path:
    """The layout as an OCI archive whose bytes depend only on its content."""
    index = named_index(json.loads((layout / "index.json").read_text()), name)
    index_bytes = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in (("oci-layout", (layout / "oci-layout").read_bytes()),
                           ("index.json", index_bytes), ("blobs", None),
                           ("blobs/sha256", None)):
            info, blob = _member(path, data, epoch)
            tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
        for blob in sorted((layout / "blobs" / "sha256").iterdir()):
            info, _ = _member(f"blobs/sha256/{blob.name}", b"", epoch)
            info.size = blob.stat().st_size
            with open(blob, "rb") as fh:
                tar.addfile(info, fh)
    out.chmod(0o644)
    return out


def archive_name(name: str) -> str:
    """ghcr.io/openfaas/gateway:0.27.12 -> ghcr.io_openfaas_gateway_0.27.12.tar (pure)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".tar"


def list_text(images: Sequence[Image]) -> str:
    """images.lst, read by the faasd init script: `<archive> <image name>` per line."""
    return "".join(f"{archive_name(i.name)} {i.name}\n" for i in images)


def compose_images(text: str) -> list[str]:
    """The `image:` values of a docker-compose.yaml, in file order (pure; no YAML library:
    faasd's files keep each image on its own `image: ref` line)."""
    found = re.findall(r"^\s*image:\s*[\"']?([^\s\"'#]+)", text, flags=re.MULTILINE)
    return list(dict.fromkeys(found))
