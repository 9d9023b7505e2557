"""Container images: recipe validation, pinning (platform choice, argv), archives that
`ctr image import` names correctly and whose bytes depend only on their content, and the
lock's image pins."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from appliance import config
from appliance import lock as lockfile
from appliance.errors import ConfigError, FetchError
from appliance.stages.extensions import images
from tests.fakes import FakeRunner

BASE = {"tinycore": {"mirrors": ["http://m/"], "guest_mirror": "http://m/"}}
DIGEST = "a" * 64
OTHER = "b" * 64


def recipe(**extra) -> config.Recipe:
    return config.Recipe.model_validate({**BASE, **extra})


def standin_image() -> config.Image:
    return config.Image(name="docker.io/standin/busybox:1.35.0",
                        source="127.0.0.1:8912/standin/busybox:1.35.0", tls_verify=False)


def test_image_references_must_be_qualified_tagged_and_digest_free(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[tinycore]\nmirrors = ["http://m/"]\nguest_mirror = "http://m/"\n'
                    '[[images]]\nname = "nats:1"\n[[images]]\nname = "docker.io/a/b@sha256:00"\n'
                    '[[images]]\nname = "docker.io/a/b:1"\n[[images]]\nname = "docker.io/a/b:1"\n')
    with pytest.raises(ConfigError) as err:
        config.load([path])
    text = str(err.value)
    assert "images[0].name: 'nats:1' is not a fully qualified image reference" in text
    assert "give a tag, not a digest (the lock pins the digest" in text


def test_duplicate_images_are_refused():
    with pytest.raises(Exception, match="images: listed more than once: docker.io/a/b:1"):
        recipe(images=[{"name": "docker.io/a/b:1"}, {"name": "docker.io/a/b:1"}])


def test_source_defaults_to_the_name_and_splits_at_the_tag():
    image = standin_image()
    assert (image.repository, image.tag) == ("127.0.0.1:8912/standin/busybox", "1.35.0")
    plain = config.Image(name="ghcr.io/openfaas/gateway:0.27.12")
    assert plain.source_ref == plain.name and plain.repository == "ghcr.io/openfaas/gateway"


def test_argv_builders():
    image = standin_image()
    assert images.inspect_argv(image, raw=True) == [
        "skopeo", "inspect", "--raw", "--retry-times", "3", "--tls-verify=false",
        "docker://127.0.0.1:8912/standin/busybox:1.35.0"]
    assert images.copy_argv(image, DIGEST, images.Path("/x/layout")) == [
        "skopeo", "--insecure-policy", "copy", "--retry-times", "3", "--src-tls-verify=false",
        f"docker://127.0.0.1:8912/standin/busybox@sha256:{DIGEST}", "oci:/x/layout:1.35.0"]
    tls = images.inspect_argv(config.Image(name="ghcr.io/a/b:1"), raw=False)
    assert not any("tls" in a for a in tls)


def index(*platforms: tuple[str, str, str]) -> str:
    return json.dumps({"mediaType": images.INDEX_TYPES[0], "manifests": [
        {"digest": f"sha256:{d}", "platform": {"os": o, "architecture": a}}
        for o, a, d in platforms]}, indent=3)


def test_an_index_pins_its_linux_amd64_entry():
    raw = "time=x level=warning msg=noise\n" + index(("linux", "arm64", OTHER),
                                                      ("linux", "amd64", DIGEST))
    digest, why = images.choose_digest(raw, f"sha256:{OTHER} linux/amd64", "r")
    assert digest == DIGEST and why == f"linux/amd64 entry of index sha256:{OTHER}"


def test_a_single_manifest_pins_skopeos_digest_and_must_be_amd64():
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image."
                           "manifest.v1+json", "layers": []})
    assert images.choose_digest(manifest, f"sha256:{DIGEST} linux/amd64", "r") == (
        DIGEST, "manifest digest from the registry")
    with pytest.raises(FetchError, match="is for linux/arm64, not linux/amd64"):
        images.choose_digest(manifest, f"sha256:{DIGEST} linux/arm64", "r")


def test_an_index_without_amd64_says_what_it_offers():
    with pytest.raises(FetchError, match=r"offers: linux/arm64, unknown/unknown"):
        images.choose_digest(index(("linux", "arm64", OTHER), ("unknown", "unknown", DIGEST)),
                             f"sha256:{OTHER} linux/arm64", "r")


def test_resolve_runs_skopeo_twice_and_reports_failures():
    answers = {True: (0, index(("linux", "amd64", DIGEST))), False: (0, f"sha256:{OTHER} linux/amd64")}
    runner = FakeRunner(respond=lambda argv: answers["--raw" in argv])
    assert images.resolve_digest(standin_image(), runner)[0] == DIGEST
    assert len(runner.calls) == 2
    broken = FakeRunner(respond=lambda argv: (1, "pinging container registry: refused"))
    with pytest.raises(FetchError, match="skopeo inspect failed:\n    pinging"):
        images.resolve_digest(standin_image(), broken)


def layout(root, config_bytes=b"{}", layer=b"layer") -> images.Path:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    digests = []
    for data in (config_bytes, layer):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        digests.append(digest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": f"sha256:{digests[0]}", "size": 2,
         "annotations": {"org.opencontainers.image.ref.name": "1.35.0"}}]}))
    return root


def test_archives_name_the_image_for_ctr_and_are_byte_identical(tmp_path):
    src = layout(tmp_path / "layout")
    one = images.write_archive(src, "docker.io/standin/busybox:1.35.0", tmp_path / "1.tar", 1)
    (src / "index.json").touch()  # mtimes of the layout do not matter
    two = images.write_archive(src, "docker.io/standin/busybox:1.35.0", tmp_path / "2.tar", 1)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        names = tar.getnames()
        idx = json.loads(tar.extractfile("index.json").read())
        assert {m.mtime for m in tar.getmembers()} == {1}
    assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    ann = idx["manifests"][0]["annotations"]
    assert ann["io.containerd.image.name"] == "docker.io/standin/busybox:1.35.0"


def test_a_damaged_cached_blob_is_noticed(tmp_path):
    src = layout(tmp_path / "layout")
    images.verify_layout(src)
    blob = next((src / "blobs" / "sha256").iterdir())
    blob.write_bytes(b"tampered")
    with pytest.raises(FetchError, match="content does not match its digest"):
        images.verify_layout(src)


def test_offline_without_a_cached_layout_names_the_image(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path))
    with pytest.raises(FetchError, match="docker.io/standin/busybox:1.35.0 .* --offline"):
        images.pull(standin_image(), DIGEST, FakeRunner(), offline=True)


def test_list_and_compose_parsing():
    assert images.archive_name("ghcr.io/openfaas/gateway:0.27.12") == \
        "ghcr.io_openfaas_gateway_0.27.12.tar"
    assert images.list_text([standin_image()]) == \
        "docker.io_standin_busybox_1.35.0.tar docker.io/standin/busybox:1.35.0\n"
    compose = ("services:\n  a:\n    image: ghcr.io/x/a:1  # pinned\n  b:\n"
               "    image: 'docker.io/x/b:2'\n  c:\n    image: ghcr.io/x/a:1\n")
    assert images.compose_images(compose) == ["ghcr.io/x/a:1", "docker.io/x/b:2"]


# --- the lock -----------------------------------------------------------------------------


def test_images_are_part_of_the_lock_identity_and_its_expected_pins():
    r = recipe(images=[{"name": "ghcr.io/a/b:1"}])
    lock = lockfile.Lock(lockfile.identity(r), {})
    assert lockfile.identity(r)["images"] == {"ghcr.io/a/b:1": "ghcr.io/a/b:1"}
    assert "image/ghcr.io/a/b:1: no sha256 pinned" in lockfile.unpinned(lock, r)
    moved = recipe(images=[{"name": "ghcr.io/a/b:1", "source": "ghcr.io/a/c:1"}])
    assert lockfile.staleness(lock, moved) == [
        "images.ghcr.io/a/b:1: lock has 'ghcr.io/a/b:1', recipe has 'ghcr.io/a/c:1'"]


def test_pin_image_records_digest_source_and_skips_downloads():
    runner = FakeRunner(respond=lambda argv: (0, "{}") if "--raw" in argv
                        else (0, f"sha256:{DIGEST} linux/amd64"))
    pin = lockfile.pin_image(standin_image(), runner)
    assert (pin.key, pin.sha256, pin.version) == (
        "image/docker.io/standin/busybox:1.35.0", DIGEST, "1.35.0")
    assert pin.url == "docker://127.0.0.1:8912/standin/busybox:1.35.0"
    lock = lockfile.Lock({}, {pin.key: pin})
    assert lockfile.downloads(recipe(), lock, fetcher=None) == {}


def test_the_standin_overlay_moves_compose_files_and_images_with_their_ports():
    from tests.standin import mirror

    assert mirror.moved_extras(mirror.DEFAULT_PORT, 8912) == []
    lines = "\n".join(mirror.moved_extras(9000, 9999))
    assert ('[releases.faasd-compose]\nurl = "http://127.0.0.1:9000/github/openfaas/faasd/'
            'releases/download/{version}/docker-compose.yaml"') in lines
    assert ('[[images]]\nname = "docker.io/standin/busybox:1.35.0"\n'
            'source = "127.0.0.1:9999/standin/busybox:1.35.0"\ntls_verify = false') in lines


def cached_entry(root, pinned_is_layout=True):
    """A cache entry as pull leaves it; the pin is the layout's manifest, or (a converted
    Docker schema-2 image) another digest recorded beside it."""
    src = layout(root / "layout")
    named = images.layout_manifest(src)
    pin = named.removeprefix("sha256:") if pinned_is_layout else DIGEST
    (root / "source.json").write_text(json.dumps(
        {"digest": f"sha256:{pin}", "layout_manifest": named}))
    return root, pin


def test_a_cached_layout_must_name_the_pinned_manifest(tmp_path):
    entry, pin = cached_entry(tmp_path / "e")
    assert images.verify_pinned(entry, pin) == entry / "layout"
    index = json.loads((entry / "layout" / "index.json").read_text())
    layer = hashlib.sha256(b"layer").hexdigest()  # a blob that is present and intact
    index["manifests"][0]["digest"] = f"sha256:{layer}"
    (entry / "layout" / "index.json").write_text(json.dumps(index))
    with pytest.raises(FetchError, match=f"names sha256:{layer}, not the pinned sha256:{pin}"):
        images.verify_pinned(entry, pin)


def test_a_converted_layout_is_checked_against_what_its_pull_recorded(tmp_path):
    entry, pin = cached_entry(tmp_path / "e", pinned_is_layout=False)
    images.verify_pinned(entry, pin)
    with pytest.raises(FetchError, match="not the pinned"):  # a pin the entry was not pulled by
        images.verify_pinned(entry, "b" * 64)
    (entry / "source.json").unlink()
    with pytest.raises(FetchError, match="not the pinned"):
        images.verify_pinned(entry, pin)


def test_a_layout_with_two_manifests_is_refused(tmp_path):
    entry, pin = cached_entry(tmp_path / "e")
    index = json.loads((entry / "layout" / "index.json").read_text())
    index["manifests"] *= 2
    (entry / "layout" / "index.json").write_text(json.dumps(index))
    with pytest.raises(FetchError, match="expected one manifest"):
        images.verify_pinned(entry, pin)
