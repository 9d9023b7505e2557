"""overlays/<name>/extension.toml: what one custom extension is made of (strict model).

An overlay folder holds `root/` (files laid out as in /) and `extension.toml`:

    name = "containerd"             # NAME.tcz; must equal the folder name
    version_from = "containerd"     # .info Version: that release's version (or `version`)
    deps = ["iptables.tcz", "net-bridging-KERNEL.tcz"]       # NAME.tcz.dep, as written
    module_deps = ["overlay"]       # kernel-stage extensions carrying these join .dep
    required_modules = []           # ... and the build fails unless one carries each of these
    [info]                          # .info fields (Tiny Core's names; Title/Size/Version computed)
    [[install]]                     # release files placed in the tree
    release = "containerd"          #   releases.<name> of the recipe
    members = ["bin/*"]             #   globs inside a .tar(.gz) release; absent: the file itself
    exclude = ["bin/containerd-stress"]
    to = "usr/local/bin/"           #   a folder (ends with /) or, for a single file, its path
    mode = "0755"
    [files."usr/local/etc/init.d/containerd"]   # one path of the tree (root/ or installed):
    mode = "0755"                   #   its mode, and owner ("root:root" default, "root:staff",
                                    #   "tc:staff"); usr/local/tce.installed is always root:staff
    [images]                        # carries the recipe's container images (appliance/stages/extensions/images.py)
    dest = "usr/local/share/faasd/images"
    compose_release = "faasd-compose"   # every image this compose file names must be shipped
    [runtime]
    writes = ["var/lib/containerd"] # written by the service at run time: never shipped

Modes default to 0755 for folders, and for files to 0755 when executable in the checkout
(git keeps only that bit) else 0644, so the .tcz does not depend on the builder's umask.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from appliance.config import Name, Strict, describe_error, format_loc
from appliance.errors import ConfigError
from appliance.tinycore import tcz

SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@:,=-]+(/[A-Za-z0-9._+@:,=-]+)*/?$")
OWNERS = {"root:root": (0, 0), "root:staff": (0, tcz.STAFF_GID), "tc:staff": (1001, tcz.STAFF_GID)}
INFO_KEYS = tuple(f for f in tcz.INFO_FIELDS if f not in (*tcz.COMPUTED_INFO, "Version"))


def check_inside(value: str) -> str:
    """A path inside the extension's root: relative, no `..`, plain characters."""
    parts = value.rstrip("/").split("/")
    if value.startswith("/") or ".." in parts or "." in parts or not SAFE_PATH.match(value):
        raise ValueError(f"'{value}' escapes the extension's root or is not a plain relative "
                         "path (e.g. usr/local/bin/ or usr/local/sbin/runc)")
    return value


def check_mode(value: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise ValueError(f"'{value}' is not an octal mode such as \"0755\"")
    return value


Inside = Annotated[str, AfterValidator(check_inside)]
Mode = Annotated[str, AfterValidator(check_mode)]


class Install(Strict):
    release: Name
    members: list[Annotated[str, Field(min_length=1)]] | None = None
    exclude: list[str] = []
    to: Inside
    mode: Mode = "0755"

    @model_validator(mode="after")
    def folder_for_members(self) -> Install:
        if self.members is not None and not self.to.endswith("/"):
            raise ValueError(f"to = '{self.to}': with members, `to` is a folder (end it with /)")
        return self


class FileAttrs(Strict):
    mode: Mode | None = None
    owner: Literal["root:root", "root:staff", "tc:staff"] | None = None


class Images(Strict):
    dest: Inside
    compose_release: Name | None = None


class Runtime(Strict):
    writes: list[Inside] = []


class ExtensionSpec(Strict):
    name: Name
    version: str | None = None
    version_from: Name | None = None
    deps: list[Name] = []
    module_deps: list[Name] = []
    required_modules: list[Name] = []
    info: dict[str, str]
    install: list[Install] = []
    files: dict[Inside, FileAttrs] = {}
    images: Images | None = None
    runtime: Runtime = Runtime()

    @field_validator("info")
    @classmethod
    def info_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(INFO_KEYS))
        if unknown:
            raise ValueError(f"unknown .info field {unknown[0]!r} (allowed: {', '.join(INFO_KEYS)};"
                             " Title, Size and Version are computed)")
        missing = [f for f in tcz.REQUIRED_INFO if f != "Version" and not value.get(f)]
        if missing:
            raise ValueError(f"missing .info field(s): {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def consistent(self) -> ExtensionSpec:
        problems = []
        if (self.version is None) == (self.version_from is None):
            problems.append("give exactly one of version (a literal) and version_from "
                            "(the name of a release in the recipe)")
        undeclared = sorted(set(self.required_modules) - set(self.module_deps))
        if undeclared:
            problems.append(f"required_modules {undeclared} must also be in module_deps")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def filename(self) -> str:
        return f"{self.name}.tcz"

    def owner_of(self, rel: str) -> tuple[int, int] | None:
        attrs = self.files.get(rel)
        return OWNERS[attrs.owner] if attrs and attrs.owner else None


def _problems(exc: ValidationError, where: Path) -> list[str]:
    return [f"{where}: {format_loc(tuple(e['loc'])) or '(top level)'}: {describe_error(e)}"
            for e in exc.errors(include_url=False)]


def load(folder: Path) -> ExtensionSpec:
    """One overlay's extension.toml, validated; every problem reported at once."""
    path = folder / "extension.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = "every folder in overlays/ is one extension: root/ + extension.toml"
        raise ConfigError([f"{folder}: no extension.toml"], hint) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    try:
        spec = ExtensionSpec.model_validate(data)
    except ValidationError as exc:
        hint = "see the field list at the top of appliance/stages/extensions/overlay_spec.py"
        raise ConfigError(_problems(exc, path), hint) from None
    if spec.name != folder.name:
        raise ConfigError([f"{path}: name: '{spec.name}' must equal the folder name "
                           f"'{folder.name}'"])
    return spec


def select(overlays_dir: Path, wanted: list[str] | None) -> list[Path]:
    """The overlay folders a recipe builds: those it names (in its order), or all, sorted."""
    present = sorted(p.name for p in overlays_dir.iterdir() if p.is_dir()) \
        if overlays_dir.is_dir() else []
    if wanted is None:
        return [overlays_dir / n for n in present]
    missing = [n for n in wanted if n not in present]
    if missing:
        raise ConfigError([f"overlays: no folder overlays/{n}/" for n in missing],
                          f"the overlays are: {', '.join(present) or 'none'}")
    return [overlays_dir / n for n in wanted]


def covers(path: str, prefixes: list[str]) -> str | None:
    """The first of prefixes that path is at or below (pure)."""
    norm = posixpath.normpath(path)
    for prefix in prefixes:
        p = posixpath.normpath(prefix)
        if norm == p or norm.startswith(p + "/"):
            return prefix
    return None
