"""appliance.lock: the exact bytes of every remote input (sha256, plus upstream md5).

`pipeline.py lock` resolves the recipe against the mirrors, trusting only upstream checksum
files (`<file>.md5.txt` on Tiny Core mirrors, `.sha256`/`.sha256sum` beside release assets),
and records which file each pin came from. Container images are pinned by the digest of their
linux/amd64 manifest as the registry serves it (appliance/stages/extensions/images.py). `build --locked`
refuses anything not pinned here.

A pin that nothing independent vouches for is marked `first_use`: no upstream checksum file
(the bytes first downloaded are trusted), or a checksum file or registry answer that came
over plain http (whoever could change the download could change it too). `lock` prints them
in a block to review; `build --locked` refuses them until `lock --accept-first-use` records
that a person accepted exactly those bytes (`first_use_accepted`: key -> sha256; a later
`lock` keeps an acceptance whose bytes did not change).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance import files, log
from appliance.config import Image, Recipe
from appliance.errors import ChecksumError, LockError, PipelineError
from appliance.fetch import Download, Fetcher, md5_file, parse_checksum_file, sha256_file
from appliance.run import Runner
from appliance.stages.extensions import images
from appliance.tinycore.repository import TinyCoreRepo

LOCK_FORMAT = 1


@dataclass(frozen=True)
class Pin:
    key: str  # "iso", "tcz/openssh.tcz", "release/containerd", "image/<name>"
    name: str  # file name
    version: str
    url: str  # where it was fetched from at lock time (informative)
    sha256: str
    md5: str | None = None
    trusted: str = ""  # which upstream checksum file vouched for it
    first_use: bool = False  # nothing independent vouched for it (see the module doc)


@dataclass
class Lock:
    identity: dict
    pins: dict[str, Pin]
    extension_order: list[str] = field(default_factory=list)
    extension_deps: dict[str, list[str]] = field(default_factory=dict)
    first_use_accepted: dict[str, str] = field(default_factory=dict)  # key -> sha256

    def to_json(self) -> str:
        data = {
            "format": LOCK_FORMAT,
            "identity": self.identity,
            "extensions": {"order": self.extension_order, "deps": self.extension_deps},
            "pins": [asdict(p) for p in sorted(self.pins.values(), key=lambda p: p.key)],
            "first_use_accepted": dict(sorted(self.first_use_accepted.items())),
        }
        return json.dumps(data, indent=2) + "\n"


def identity(recipe: Recipe) -> dict:
    """What the lock must agree with; mirrors are left out (the same bytes from anywhere)."""
    tc = recipe.tinycore
    return {
        "tinycore": {"iso": tc.iso_name, "release": tc.release_dir, "arch": tc.arch,
                     "kernel": tc.kernel, "extensions": list(tc.extensions)},
        "releases": {n: r.resolved_url() for n, r in sorted(recipe.releases.items())},
        "kernel": kernel_inputs(recipe),
        "images": {i.name: i.source_ref for i in recipe.images},
    }


def kernel_inputs(recipe: Recipe) -> dict[str, str]:
    """The kernel's config and source, fetched only when the kernel stage builds something."""
    k = recipe.kernel
    if not (k.modules or k.rebuild == "full"):
        return {}
    return {"kernel/config": k.config or "", "kernel/source": k.source or ""}


def iso_urls(recipe: Recipe) -> tuple[str, ...]:
    tc = recipe.tinycore
    return tuple(
        f"{m.rstrip('/')}/{tc.release_dir}/{tc.arch}/release/{tc.iso_name}" for m in tc.mirrors
    )


def repo_for(recipe: Recipe, fetcher: Fetcher) -> TinyCoreRepo:
    tc = recipe.tinycore
    return TinyCoreRepo(tc.mirrors, fetcher, release=tc.release_dir, arch=tc.arch,
                        kernel=tc.kernel)


def read(path: Path) -> Lock | None:
    """The lock at `path`, or None when there is none; a damaged file is an error."""
    if not path.exists():
        return None
    hint = "delete it and run `python pipeline.py lock` to write a new one"
    if path.is_dir():
        raise LockError(f"{path}: is a folder, not a lock file",
                        "pass the lock file itself with --lock PATH") from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise LockError(f"{path}: not a valid lock file ({exc})", hint) from None
    except OSError as exc:
        raise LockError(f"{path}: cannot read: {exc.strerror or exc}") from None


IDENTITY_SECTIONS = ("tinycore", "releases", "kernel", "images")
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_PIN_TEXT = ("key", "name", "version", "url", "trusted")


def parse(data: object) -> Lock:
    """A Lock from parsed JSON; ValueError/TypeError name the first thing that is wrong.

    The pins' names become file names in the download cache, so a name is one plain path
    component: a `../` in a hand-edited or hostile lock must not write outside it. (An
    image's name is its reference, `ghcr.io/openfaas/gateway:0.27.12`; its cache is keyed
    by digest.)"""
    if not isinstance(data, dict):
        raise TypeError(f"the top level is a JSON {type(data).__name__}, not an object")
    if data.get("format") != LOCK_FORMAT:
        raise ValueError(f"unsupported lock format {data.get('format')!r}")
    pins_data, ident = data["pins"], data["identity"]
    if not isinstance(pins_data, list) or not isinstance(ident, dict):
        raise TypeError("`pins` must be a list and `identity` an object")
    for section in IDENTITY_SECTIONS:
        if not isinstance(ident.get(section, {}), dict):
            raise TypeError(f"`identity.{section}` must be an object")
    pins = {}
    for index, item in enumerate(pins_data):
        if isinstance(item, dict):
            item = {"first_use": legacy_first_use(item), **item}
        pin = parse_pin(item, f"pins[{index}]")
        pins[pin.key] = pin
    ext = data.get("extensions", {})
    if not isinstance(ext, dict):
        raise TypeError("`extensions` must be an object")
    order, deps = ext.get("order", []), ext.get("deps", {})
    if not (isinstance(order, list) and all(isinstance(n, str) for n in order)):
        raise TypeError("`extensions.order` must be a list of names")
    if not (isinstance(deps, dict) and all(
            isinstance(v, list) and all(isinstance(d, str) for d in v) for v in deps.values())):
        raise TypeError("`extensions.deps` must map names to lists of names")
    accepted = data.get("first_use_accepted", {})
    if not isinstance(accepted, dict):
        raise TypeError("`first_use_accepted` must map pin names to sha256 digests")
    return Lock(ident, pins, order, deps, {str(k): str(v) for k, v in accepted.items()})


def parse_pin(item: object, where: str) -> Pin:
    if not isinstance(item, dict):
        raise TypeError(f"{where} is not an object")
    pin = Pin(**item)
    for name in _PIN_TEXT:
        if not isinstance(getattr(pin, name), str):
            raise TypeError(f"{where}.{name} must be a string")
    for algo, pattern in _HEX.items():
        value = getattr(pin, algo)
        if (value is not None or algo == "sha256") and not (
                isinstance(value, str) and pattern.fullmatch(value)):
            raise ValueError(f"{where}.{algo} must be a lower-case hex {algo} digest, "
                             f"not {value!r}")
    if pin.key.startswith("image/"):
        return pin  # an image reference, pulled by digest into the image cache, not a file
    if pin.name in ("", ".", "..") or "/" in pin.name or "\\" in pin.name or "\0" in pin.name:
        raise ValueError(f"{where}.name {pin.name!r} must be a plain file name (no folders)")
    return pin


def legacy_first_use(pin: dict) -> bool:
    """A lock written before pins were marked: judged by what its `trusted` text says."""
    trusted = str(pin.get("trusted", ""))
    return trusted.startswith(("trusted on first download", "md5 from http://",
                               "sha256 from http://"))


def write(path: Path, lock: Lock) -> None:
    files.write_text(path, lock.to_json(), error=PipelineError,
                     hint="pass a writable place with --lock PATH, or free space there")


def staleness(lock: Lock, recipe: Recipe) -> list[str]:
    """Differences between the lock and the recipe; empty when the lock is up to date."""
    want, have = identity(recipe), lock.identity
    diffs = []
    for section in IDENTITY_SECTIONS:
        w, h = want.get(section, {}), have.get(section, {})
        for key in sorted(set(w) | set(h)):
            if w.get(key) != h.get(key):
                diffs.append(f"{section}.{key}: lock has {h.get(key)!r}, recipe has {w.get(key)!r}")
    return diffs


def expected_keys(lock: Lock, recipe: Recipe) -> list[str]:
    """Every input the build will fetch: the ISO, each resolved extension, each release."""
    return (["iso"] + [f"tcz/{name}" for name in lock.extension_order]
            + [f"release/{name}" for name in sorted(recipe.releases)]
            + sorted(kernel_inputs(recipe)) + [image_key(i) for i in recipe.images])


def unpinned(lock: Lock, recipe: Recipe) -> list[str]:
    missing = []
    for key in expected_keys(lock, recipe):
        pin = lock.pins.get(key)
        if pin is None or not re.fullmatch(r"[0-9a-f]{64}", pin.sha256 or ""):
            missing.append(f"{key}: no sha256 pinned")
    if recipe.tinycore.extensions and not lock.extension_order:
        missing.append("extensions: no resolved load order")
    return missing


def ensure_current(lock: Lock | None, recipe: Recipe, path: Path) -> Lock:
    """For --locked: the lock must exist and match the recipe exactly."""
    if lock is None:
        raise LockError(
            f"{path}: no lock file, and --locked refuses unpinned inputs",
            "run `python pipeline.py lock` (or `make image`, which locks first)",
        )
    diffs = staleness(lock, recipe) + unpinned(lock, recipe)
    if diffs:
        shown = "\n".join(f"  {d}" for d in diffs)
        raise LockError(
            f"{path} is out of date with the recipe:\n{shown}",
            "run `python pipeline.py lock` to update it, then review the diff",
        )
    waiting = unaccepted(lock)
    if waiting:
        shown = "\n".join(f"  {p.key}: sha256 {p.sha256} ({p.trusted})" for p in waiting)
        raise LockError(
            f"{path} has first-use pins that no person accepted:\n{shown}",
            "review them, then run `python pipeline.py lock --accept-first-use`",
        )
    return lock


def differences(old: Lock, new: Lock) -> list[str]:
    """What a fresh resolve changed against a lock (identity, load order, pinned bytes)."""
    diffs = []
    for section in sorted(set(old.identity) | set(new.identity)):
        was, now = old.identity.get(section, {}), new.identity.get(section, {})
        for key in sorted(set(was) | set(now)):
            if was.get(key) != now.get(key):
                diffs.append(f"{section}.{key}: lock has {was.get(key)!r}, recipe has "
                             f"{now.get(key)!r}")
    if old.extension_order != new.extension_order:
        diffs.append(f"extension order: lock has {old.extension_order}, upstream gives "
                     f"{new.extension_order}")
    for key in sorted(set(old.pins) | set(new.pins)):
        was, now = old.pins.get(key), new.pins.get(key)
        if (was and was.sha256) != (now and now.sha256):
            diffs.append(f"{key}: lock has {was.sha256 if was else None}, upstream gives "
                         f"{now.sha256 if now else None}")
    return diffs


def first_use(lock: Lock) -> list[Pin]:
    return [p for p in sorted(lock.pins.values(), key=lambda p: p.key) if p.first_use]


def unaccepted(lock: Lock) -> list[Pin]:
    """First-use pins whose exact bytes the lock does not record as accepted."""
    return [p for p in first_use(lock) if lock.first_use_accepted.get(p.key) != p.sha256]


def settle_acceptance(lock: Lock, previous: Lock | None, *, accept: bool) -> Lock:
    """The acceptances the new lock carries: every first-use pin with --accept-first-use,
    else those the previous lock accepted for the very same bytes."""
    before = previous.first_use_accepted if previous else {}
    lock.first_use_accepted = {
        p.key: p.sha256 for p in first_use(lock)
        if accept or before.get(p.key) == p.sha256}
    return lock


def review_block(lock: Lock) -> list[str]:
    """The lines `lock` ends with when some pins are first-use (empty when none is)."""
    pins = first_use(lock)
    if not pins:
        return []
    lines = [f"first-use pins ({len(pins)}): nothing independent vouched for these bytes; "
             "review before committing the lock"]
    for p in pins:
        state = "accepted" if lock.first_use_accepted.get(p.key) == p.sha256 else "NOT accepted"
        lines += [f"  {p.key}  [{state}]", f"    sha256 {p.sha256}", f"    from {p.url}",
                  f"    {p.trusted}"]
    if unaccepted(lock):
        lines.append("`build --locked` refuses them until a person runs "
                     "`python pipeline.py lock --accept-first-use`")
    return lines


def over_plain_http(url: str) -> bool:
    return url.startswith("http://")


def plain_http_note(url: str) -> str:
    return " (over plain http: no better than the download itself)" if over_plain_http(url) else ""


def resolve(recipe: Recipe, fetcher: Fetcher, runner: Runner | None = None) -> Lock:
    """Pin every remote input, trusting only upstream checksum files; prints each pin."""
    pins: dict[str, Pin] = {}
    pin = pin_iso(recipe, fetcher)
    pins[pin.key] = pin
    repo = repo_for(recipe, fetcher)
    exts = repo.resolve(recipe.tinycore.extensions)
    for ext in exts:
        pin = pin_tcz(repo, ext, recipe.tinycore.version, fetcher)
        pins[pin.key] = pin
    for name, rel in sorted(recipe.releases.items()):
        pin = pin_release(name, rel, fetcher)
        pins[pin.key] = pin
    for key, path in sorted(kernel_inputs(recipe).items()):
        pin = pin_mirror_file(key, recipe.mirror_urls(path), recipe.tinycore.kernel, fetcher)
        pins[pin.key] = pin
    for image in recipe.images:
        pin = pin_image(image, runner or Runner())
        pins[pin.key] = pin
    order = [e.name for e in exts]
    deps = {e.name: list(e.deps) for e in exts}
    return Lock(identity(recipe), pins, order, deps)


def image_key(image: Image) -> str:
    return f"image/{image.name}"


def pin_image(image: Image, runner: Runner) -> Pin:
    """An image by the digest of its linux/amd64 manifest (the registry's own answer)."""
    digest, source = images.resolve_digest(image, runner)
    plain = not image.tls_verify
    if plain:
        source += " (registry without TLS verification)"
    return announce(Pin(image_key(image), image.name, image.tag, f"docker://{image.source_ref}",
                        digest, None, source, plain))


def pin_mirror_file(key: str, urls: tuple[str, ...], version: str, fetcher: Fetcher) -> Pin:
    """A file on the mirror that may or may not have a `.md5.txt` beside it (kernel sources:
    not confirmed for tc11); without one the first download is trusted, and that is said."""
    name = urls[0].rstrip("/").rsplit("/", 1)[-1]
    found = fetcher.get_text([u + ".md5.txt" for u in urls], missing_ok=True)
    if found is not None:
        return pin_by_md5(key, name, version, urls, fetcher,
                          parse_checksum_file(found[1], name), found[0])
    path = fetcher.fetch(Download(name=name, urls=urls))
    log.warn(f"{key}: no {name}.md5.txt on the mirror; trusting the bytes first downloaded")
    return announce(Pin(key, name, version, urls[0], sha256_file(path), md5_file(path),
                        "trusted on first download (no upstream checksum file)", True))


def announce(pin: Pin) -> Pin:
    log.detail(f"pinned {pin.key}: sha256 {pin.sha256} ({pin.trusted})")
    return pin


def pin_by_md5(key: str, name: str, version: str, urls: tuple[str, ...], fetcher: Fetcher,
               md5: str | None = None, md5_url: str = "") -> Pin:
    """Download and pin a file that Tiny Core vouches for with `<file>.md5.txt`."""
    md5_urls = [u + ".md5.txt" for u in urls]
    if md5 is None:
        found = fetcher.get_text(md5_urls)
        if found is None:
            raise LockError(f"{key}: no {name}.md5.txt on any mirror")
        md5_url, md5 = found[0], parse_checksum_file(found[1], name)
    path = fetcher.fetch(Download(name=name, urls=urls, md5=md5))
    return announce(Pin(key, name, version, urls[0], sha256_file(path), md5_file(path),
                        f"md5 from {md5_url}{plain_http_note(md5_url)}",
                        over_plain_http(md5_url)))


def pin_iso(recipe: Recipe, fetcher: Fetcher) -> Pin:
    tc = recipe.tinycore
    return pin_by_md5("iso", tc.iso_name, tc.version, iso_urls(recipe), fetcher)


def pin_tcz(repo: TinyCoreRepo, ext, version: str, fetcher: Fetcher) -> Pin:
    # resolve() already read NAME.tcz.md5.txt (that is how it knows the extension exists)
    return pin_by_md5(f"tcz/{ext.name}", ext.name, version, repo.urls(ext.name), fetcher,
                      ext.md5, repo.md5_sources.get(ext.name, f"{ext.name}.md5.txt"))


def pin_release(name: str, rel, fetcher: Fetcher) -> Pin:
    url, key = rel.resolved_url(), f"release/{name}"
    checksum_url = rel.resolved_checksum_url()
    if checksum_url is None:
        path = fetcher.fetch(Download(name=rel.filename, urls=(url,)))
        log.warn(f"{key}: no checksum_url in the recipe; trusting the bytes first downloaded")
        return announce(Pin(key, rel.filename, rel.version, url, sha256_file(path), None,
                            "trusted on first download (no upstream checksum file)", True))
    found = fetcher.get_text([checksum_url])
    if found is None:
        raise LockError(f"{key}: checksum file {checksum_url} not found")
    expected = parse_checksum_file(found[1], rel.filename)
    path = fetcher.fetch(Download(name=rel.filename, urls=(url,), sha256=expected))
    if sha256_file(path) != expected:  # the fetcher verified it; this guards a changed contract
        raise ChecksumError(f"{key}: sha256 does not match {checksum_url}")
    return announce(Pin(key, rel.filename, rel.version, url, expected, None,
                        f"sha256 from {found[0]}{plain_http_note(found[0])}",
                        over_plain_http(found[0])))


def downloads(recipe: Recipe, lock: Lock, fetcher: Fetcher) -> dict[str, Download]:
    """Every input of the recipe as a pinned Download, URLs from the recipe's current mirrors."""
    repo = repo_for(recipe, fetcher)
    result: dict[str, Download] = {}
    for key, pin in lock.pins.items():
        if key.startswith("image/"):
            continue  # pulled by the extensions stage with skopeo (appliance/stages/extensions/images.py)
        if key == "iso":
            urls = iso_urls(recipe)
        elif key.startswith("tcz/"):
            urls = repo.urls(pin.name)
        elif key.startswith("kernel/") and key in kernel_inputs(recipe):
            urls = recipe.mirror_urls(kernel_inputs(recipe)[key])
        elif key.startswith("release/") and key.removeprefix("release/") in recipe.releases:
            urls = (recipe.releases[key.removeprefix("release/")].resolved_url(),)
        else:  # a hand-edited lock: nothing in the recipe says where this comes from
            raise LockError(f"the lock pins {key!r}, which is not an input of the recipe",
                            "run `python pipeline.py lock` to write a lock for this recipe")
        result[key] = Download(name=pin.name, urls=urls, sha256=pin.sha256, md5=pin.md5)
    return result
