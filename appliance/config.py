"""The recipe model: strict (unknown keys are errors), loaded from one or more TOML files.

Every problem in every file is collected and reported at once as
`appliance.toml: tinycore.extensions[3]: ...`; a recipe is input, not code, so every value
that later lands in a boot line, a shell script, HCL or XML is checked here first.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance import log
from appliance.errors import ConfigError

BOOT_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=,@+-]*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
URL = re.compile(r"^(https?|file)://[^\s\"'`<>\\{}|^]+$")
URL_TEMPLATE_FIELDS = {"version", "url"}
DEFAULT_SOURCE_DATE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z


def check_url(value: str) -> str:
    if not URL.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a valid URL (expected http://, https:// or file://, "
            "no spaces or quotes)"
        )
    return value


def check_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a valid name (letters, digits and . _ + -, "
            "starting with a letter or digit)"
        )
    return value


def check_boot_token(value: str) -> str:
    if not BOOT_TOKEN.fullmatch(value):
        shown = json.dumps(value)
        raise ValueError(
            f"boot code {shown} is not a safe token: it must match "
            "^[A-Za-z0-9][A-Za-z0-9._:/=,@+-]*$ (no spaces, quotes or newlines; "
            "list each code as its own string)"
        )
    return value


# Tiny Core reads NAME=VALUE boot codes with `case` globs in this order, so a code whose
# name merely starts with one of these words is taken as that code (`hostname=x` sets
# `host`): tinycorelinux/Core-scripts etc/init.d/tc-config @ 0ed6e60 (the `*=*` branch of
# its cmdline loop), and `restore*` in etc/init.d/tc-restore.sh @ 0ed6e60.
TC_PREFIX_CODES = (
    "waitusb", "lang", "kmap", "tz", "desktop", "ntpserver", "icons", "noicons", "user",
    "home", "tcvd", "opt", "swapfile", "resume", "host", "nfsmount", "tftplist", "httplist",
    "aoe", "nbd", "mydata", "pretce", "xvesa", "blacklist", "iso", "restore",
)  # fmt: skip


def prefix_misread(code: str) -> str | None:
    """The Tiny Core code that tc-config would take `code` for, if it is not that code."""
    name, sep, _value = code.partition("=")
    if not sep:
        return None  # flags are matched exactly
    for word in TC_PREFIX_CODES:
        if name.startswith(word):
            return None if name == word else word
    return None


def check_boot_code(value: str) -> str:
    check_boot_token(value)
    taken_for = prefix_misread(value)
    if taken_for:
        raise ValueError(
            f"'{value}' would be read by Tiny Core's tc-config as '{taken_for}' (it matches "
            f"boot codes by prefix, `{taken_for}*`); use '{taken_for}=...' if that is meant, "
            "else drop the code"
        )
    return value


# Where the live ISO's mydata.tgz is: Tiny Core's restore scan skips CD drives (tc-misc
# autoscan-devices.c with /etc/init.d/tc_noscan.lst, Core-scripts @ 0ed6e60), so only
# `restore=sr0` finds it (jschlatow/tinycore-remaster boots its ISO with exactly that).
LIVE_RESTORE_CODE = "restore=sr0"


def restore_conflict(live: list[str]) -> str | None:
    """Why boot codes `live` cannot take LIVE_RESTORE_CODE (None: they can)."""
    for code in live:
        if code == "norestore":
            return ("'norestore' keeps the live system from restoring the recipe's `restore` "
                    "files; remove it or the `restore` entries")
        if code.partition("=")[0] == "restore" and code != LIVE_RESTORE_CODE:
            return (f"'{code}' points the restore away from the CD, where the recipe's "
                    f"`restore` files are (mydata.tgz); remove it (the pipeline adds "
                    f"'{LIVE_RESTORE_CODE}')")
    return None


def live_codes_with_restore(live: list[str], has_restore: bool) -> list[str]:
    """boot.live, plus LIVE_RESTORE_CODE when the recipe has `restore` entries."""
    if not has_restore or LIVE_RESTORE_CODE in live:
        return list(live)
    return [*live, LIVE_RESTORE_CODE]


Url = Annotated[str, AfterValidator(check_url)]
Name = Annotated[str, AfterValidator(check_name)]
BootToken = Annotated[str, AfterValidator(check_boot_code)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TinyCore(Strict):
    """Which Tiny Core, from where, and which of its extensions."""

    version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+$")] = "11.1"
    flavour: Literal["CorePure64"] = "CorePure64"
    arch: Literal["x86_64"] = "x86_64"
    kernel: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+-[a-z0-9]+$")] = (
        "5.4.3-tinycore64"
    )
    mirrors: Annotated[list[Url], Field(min_length=1)]
    guest_mirror: Url
    extensions: list[Name] = []

    @property
    def release_dir(self) -> str:
        """Mirror folder of the major release: 11.1 -> 11.x."""
        return f"{self.version.split('.')[0]}.x"

    @property
    def iso_name(self) -> str:
        return f"{self.flavour}-{self.version}.iso"

    @field_validator("extensions")
    @classmethod
    def unique_extensions(cls, value: list[str]) -> list[str]:
        seen = {v for v in value if value.count(v) > 1}
        if seen:
            raise ValueError(f"listed more than once: {', '.join(sorted(seen))}")
        return value


class Release(Strict):
    """A release binary or tarball (containerd, runc, CNI plugins, faasd, faas-cli)."""

    version: Annotated[str, Field(pattern=r"^v?[0-9][A-Za-z0-9._+-]*$")]
    url: str
    checksum_url: str | None = None

    @field_validator("url", "checksum_url")
    @classmethod
    def valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = set(re.findall(r"\{([^{}]*)\}", value))
        unknown = fields - URL_TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}} in '{value}' "
                "(allowed: {version}, and {url} in checksum_url)"
            )
        check_url(value.replace("{version}", "0").replace("{url}", "http://x/"))
        return value

    def resolved_url(self) -> str:
        return self.url.replace("{version}", self.version)

    def resolved_checksum_url(self) -> str | None:
        if self.checksum_url is None:
            return None
        return self.checksum_url.replace("{version}", self.version).replace(
            "{url}", self.resolved_url()
        )

    @property
    def filename(self) -> str:
        return self.resolved_url().rstrip("/").rsplit("/", 1)[-1]


class Boot(Strict):
    """Boot codes: `live` for the install ISO, `disk` for the installed system."""

    live: list[BootToken] = ["cde", "waitusb=5"]
    disk: list[BootToken] = []

    @field_validator("live")
    @classmethod
    def live_without_noembed(cls, value: list[str]) -> list[str]:
        if "noembed" in value:
            raise ValueError(
                "noembed does not belong on the live ISO: it only installs, and containers "
                "never run from it (docs/decisions.md#install-to-disk); put it in boot.disk for frugal mode"
            )
        return value

    @field_validator("disk")
    @classmethod
    def disk_without_cde(cls, value: list[str]) -> list[str]:
        if "cde" in value:
            raise ValueError("cde loads extensions from the CD; the installed system has none")
        return value


class VM(Strict):
    cpus: Annotated[int, Field(ge=1, le=64)] = 1
    memory_mb: Annotated[int, Field(ge=256, le=65536)] = 2048
    disk_size_mb: Annotated[int, Field(ge=1024, le=2_097_152)] = 8192


MIRROR_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._+-]+)*$")


def check_mirror_path(value: str) -> str:
    """A file on the Tiny Core mirror, relative to <mirror>/<N>.x/<arch>/ (or a full URL)."""
    if "://" in value:
        return check_url(value)
    if not MIRROR_PATH.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(f"'{value}' is neither a URL nor a plain path below the mirror's "
                         "<N>.x/<arch>/ folder (e.g. release/src/kernel/config-5.4.3-tinycore64)")
    return value


MirrorPath = Annotated[str, AfterValidator(check_mirror_path)]


class Kernel(Strict):
    """The kernel's config and source on the mirror, and the modules to build against it."""

    config: MirrorPath | None = None
    source: MirrorPath | None = None
    modules: list[Name] = []
    rebuild: Literal["none", "full"] = "none"

    @model_validator(mode="after")
    def source_for_builds(self) -> Kernel:
        if (self.modules or self.rebuild == "full") and not (self.source and self.config):
            raise ValueError("building modules (or a full rebuild) needs kernel.source and "
                             "kernel.config")
        return self


# A container image reference as docker-compose.yaml and containerd write it: registry host
# (with a dot, a port or `localhost`), repository path, and a tag. Digests belong in the lock.
IMAGE_REF = re.compile(
    r"^(?P<host>localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z0-9-]+|[A-Za-z0-9.-]+:[0-9]+)"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})$"
)


def check_image_ref(value: str) -> str:
    if "@" in value:
        raise ValueError(f"'{value}': give a tag, not a digest (the lock pins the digest: "
                         "`python pipeline.py lock`)")
    if not IMAGE_REF.match(value):
        raise ValueError(f"'{value}' is not a fully qualified image reference with a tag "
                         "(e.g. ghcr.io/openfaas/gateway:0.27.12, docker.io/library/nats:2)")
    return value


ImageRef = Annotated[str, AfterValidator(check_image_ref)]


class Image(Strict):
    """A container image shipped for offline start, pulled with skopeo for linux/amd64."""

    name: ImageRef  # what containerd calls it: exactly as docker-compose.yaml names it
    source: ImageRef | None = None  # where skopeo pulls it from (default: name)
    tls_verify: bool = True  # false only for a plain-HTTP registry such as the stand-in's

    @property
    def source_ref(self) -> str:
        return self.source or self.name

    @property
    def tag(self) -> str:
        return self.source_ref.rsplit(":", 1)[1]

    @property
    def repository(self) -> str:
        """The source without its tag (`host/path`), for by-digest references."""
        return self.source_ref.rsplit(":", 1)[0]


class Install(Strict):
    mode: Literal["traditional", "frugal"] = "traditional"


class Export(Strict):
    formats: Annotated[list[Literal["qcow2", "ova"]], Field(min_length=1)] = ["qcow2", "ova"]
    # The OVA's disk controller: tc11's kernel drives both; SATA needs hardware family vmx-10.
    disk_controller: Literal["ide", "sata"] = "ide"
    # sha1 only for ESXi < 6.5, which rejects SHA256 manifest lines; sha512 breaks virt-v2v.
    manifest_digest: Literal["sha256", "sha1"] = "sha256"


# --- the live ISO and the appliance's own settings (remaster stage) -----------------------

HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# crypt(3) SHA-512: $6$[rounds=N$]salt$86 characters (what `mkpasswd -m sha-512` and
# `openssl passwd -6` print).
SHA512_CRYPT = re.compile(r"^\$6\$(rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$")
GUEST_PATH = re.compile(r"^[A-Za-z0-9._@%+,=:~-]+(/[A-Za-z0-9._@%+,=:~-]+)*$")
# Restore runs before these run (docs/architecture.md#guest-scripts): a restored copy would silently
# replace the appliance's own boot scripts.
PROTECTED_PATHS = ("opt/bootlocal.sh", "opt/bootsync.sh", "opt/firstboot.sh",
                   "opt/yaml-subset.awk", "opt/ovf-env.awk")


def check_hostname(value: str) -> str:
    if not HOSTNAME.fullmatch(value):
        raise ValueError(f"'{value}' is not a valid host name (letters, digits and -, "
                         "dot-separated labels of at most 63 characters)")
    return value


def check_password_hash(value: str) -> str:
    # Never echo the value: it may be a plain password typed into the wrong field.
    if not SHA512_CRYPT.fullmatch(value):
        raise ValueError("must be a SHA-512 crypt hash ($6$salt$..., e.g. from "
                         "`mkpasswd -m sha-512` or `openssl passwd -6`); plain passwords and "
                         "other hash types are refused (the value is not shown)")
    return value


def check_guest_path(value: str) -> str:
    """A path inside the guest, relative to / (what tar stores in mydata.tgz)."""
    parts = value.split("/")
    if not GUEST_PATH.fullmatch(value) or any(p in (".", "..") for p in parts):
        raise ValueError(f"'{value}' is not a plain relative path inside the guest (no leading "
                         "/, no . or .. parts, letters, digits and ._@%+,=:~- only)")
    if value in PROTECTED_PATHS:
        raise ValueError(f"'{value}' is the appliance's own boot script; restore data runs "
                         "before it and must not replace it")
    return value


def check_source(value: str) -> str:
    if not value or "\0" in value or "\n" in value:
        raise ValueError("must be a path on the build host")
    return value


Hostname = Annotated[str, AfterValidator(check_hostname)]
PasswordHash = Annotated[str, AfterValidator(check_password_hash)]
GuestPath = Annotated[str, AfterValidator(check_guest_path)]


class RestoreItem(Strict):
    """A file or folder of the build host, restored into the live system from mydata.tgz."""

    source: Annotated[str, AfterValidator(check_source)]  # relative to the recipe file
    path: GuestPath  # where it lands, relative to /
    owner: Literal["root", "tc"] | None = None  # default: tc below home/tc, else root
    mode: Annotated[int, Field(ge=0, le=0o7777)] | None = None  # files; default 644 / 755

    @property
    def effective_owner(self) -> str:
        if self.owner:
            return self.owner
        return "tc" if self.path == "home/tc" or self.path.startswith("home/tc/") else "root"


class Live(Strict):
    """The install ISO: what it loads from /cde at boot (deps are added, deps first)."""

    onboot: list[Name] = ["openssh", "e2fsprogs", "syslinux"]
    # Of onboot, the installer's own tools: a frugal install keeps them in tce/optional but
    # leaves them out of its onboot.lst (each load costs every boot; tce-load -i by hand).
    install_only: list[Name] = []

    @field_validator("onboot")
    @classmethod
    def ssh_is_loaded(cls, value: list[str]) -> list[str]:
        if "openssh" not in [v.removesuffix(".tcz") for v in value]:
            raise ValueError("must include openssh: the build reaches the live system over SSH")
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def install_tools_are_loaded(self) -> Live:
        onboot = [v.removesuffix(".tcz") for v in self.onboot]
        names = [v.removesuffix(".tcz") for v in self.install_only]
        absent = [n for n in names if n not in onboot]
        if absent:
            raise ValueError(f"install_only: {', '.join(absent)} not in live.onboot (only "
                             "what the install ISO loads can be left out of the appliance's boot)")
        if "openssh" in names:
            raise ValueError("install_only: openssh is how the appliance is reached; it "
                             "cannot be left out of its boot")
        return self

    @property
    def install_only_files(self) -> list[str]:
        return [f"{v.removesuffix('.tcz')}.tcz" for v in self.install_only]


FIRSTBOOT_SOURCES = ("nocloud", "ovf")


class Firstboot(Strict):
    """Where each copy of the appliance takes its configuration at first boot, in order of
    preference: a NoCloud seed (a volume labelled cidata) and/or an OVF environment CD."""

    sources: list[str] = list(FIRSTBOOT_SOURCES)

    @field_validator("sources", mode="before")
    @classmethod
    def known_and_distinct(cls, value: object) -> list[str]:
        # One message that names the allowed values for every kind of mistake (a string
        # instead of a list, an unknown name, a repeat), not pydantic's type jargon.
        allowed = ", ".join(FIRSTBOOT_SOURCES)
        if not isinstance(value, list):
            raise ValueError(f"must be a list of sources, each one of {allowed} "
                             f"(e.g. [\"nocloud\", \"ovf\"]; [] turns first-boot "
                             f"configuration off), got {type(value).__name__} {json.dumps(value)}")
        unknown = [v for v in value if v not in FIRSTBOOT_SOURCES]
        if unknown:
            raise ValueError(f"unknown source {json.dumps(unknown[0])}: each entry must be one "
                             f"of {allowed} ([] turns first-boot configuration off)")
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)} (each of {allowed} "
                             "at most once)")
        return value


class Recipe(Strict):
    """The whole recipe: what goes into the appliance."""

    name: Name = "tc-appliance"
    version: Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")] = "0.1.0"
    source_date_epoch: Annotated[int, Field(ge=315532800)] = DEFAULT_SOURCE_DATE_EPOCH
    tinycore: TinyCore
    releases: dict[Name, Release] = {}
    services: list[Name] = []
    boot: Boot = Boot()
    kernel: Kernel = Kernel()
    overlays: list[Name] | None = None  # custom extensions from overlays/ (None: every one)
    images: list[Image] = []
    vm: VM = VM()
    install: Install = Install()
    export: Export = Export()
    hostname: Hostname = "tc-appliance"
    ready_timeout: Annotated[int, Field(ge=10, le=86400)] = 600  # seconds, all services
    tc_password_hash: PasswordHash | None = None
    console_autologin: bool = False  # true: Tiny Core's automatic login of tc on tty1
    restore: list[RestoreItem] = []
    live: Live = Live()
    firstboot: Firstboot = Firstboot()

    @model_validator(mode="after")
    def services_unique(self) -> Recipe:
        dupes = sorted({s for s in self.services if self.services.count(s) > 1})
        if dupes:
            raise ValueError(f"services: listed more than once: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def images_and_overlays_unique(self) -> Recipe:
        names = [i.name for i in self.images]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"images: listed more than once: {', '.join(dupes)}")
        listed = self.overlays or []
        dupes = sorted({n for n in listed if listed.count(n) > 1})
        if dupes:
            raise ValueError(f"overlays: listed more than once: {', '.join(dupes)}")
        return self

    def live_boot_codes(self) -> list[str]:
        """boot.live as it goes on the ISO's boot line (the login policy added)."""
        return self._login_policy(self.boot.live)

    def disk_boot_codes(self) -> list[str]:
        """boot.disk as it goes on the installed system's boot line."""
        return self._login_policy(self.boot.disk)

    def _login_policy(self, codes: list[str]) -> list[str]:
        # Tiny Core logs tc in on tty1 unless booted with noautologin, and tc has
        # passwordless sudo (tinycorelinux/Core-scripts etc/init.d/tc-config @ 0ed6e60).
        if self.console_autologin or "noautologin" in codes:
            return list(codes)
        return [*codes, "noautologin"]

    @model_validator(mode="after")
    def restore_reaches_the_cd(self) -> Recipe:
        if self.restore:
            conflict = restore_conflict(self.boot.live)
            if conflict:
                raise ValueError(f"boot.live: {conflict}")
        return self

    def mirror_urls(self, path: str) -> tuple[str, ...]:
        """A mirror file (relative to <mirror>/<N>.x/<arch>/, or a URL) on every mirror."""
        if "://" in path:
            return (path,)
        tc = self.tinycore
        return tuple(f"{m.rstrip('/')}/{tc.release_dir}/{tc.arch}/{path}" for m in tc.mirrors)

    def effective_source_date_epoch(self) -> int:
        """SOURCE_DATE_EPOCH from the environment wins over the recipe (reproducible-builds.org)."""
        env = os.environ.get("SOURCE_DATE_EPOCH")
        return int(env) if env and env.isdigit() else self.source_date_epoch


class LoadedRecipe:
    """A validated recipe plus where it came from (for error messages and the lock path)."""

    def __init__(self, recipe: Recipe, files: list[Path]):
        self.recipe = recipe
        self.files = files

    @property
    def default_lock_path(self) -> Path:
        # docs/architecture.md#recipe-and-lock: `appliance.lock` beside the first recipe file.
        return self.files[0].parent / "appliance.lock"


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` onto `base`: tables merge, everything else (lists too) replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def provenance(data: dict, origin: str, into: dict[tuple, str], prefix: tuple = ()) -> None:
    """Record, for every key path in `data`, the file that set it last."""
    for key, value in data.items():
        path = prefix + (key,)
        into[path] = origin
        if isinstance(value, dict):
            provenance(value, origin, into, path)


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: recipe file not found"], "pass an existing file with -c PATH"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 only (TOML 1.0, "Spec")
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}): TOML files are "
                           "UTF-8"], "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def origin_of(loc: tuple, origins: dict[tuple, str], default: str) -> str:
    keys = tuple(p for p in loc if not isinstance(p, int))
    while keys:
        if keys in origins:
            return origins[keys]
        keys = keys[:-1]
    return default


def describe_error(err: dict) -> str:
    """One pydantic error as a short sentence, without pydantic's URLs and type jargon."""
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the recipe reference in README.md)"
    if kind == "missing":
        return "required but missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind.endswith("_type") or kind in {"int_from_float", "string_too_short"}:
        return f"{msg} (got {type(err.get('input')).__name__} {json.dumps(err.get('input'))})"
    return msg


def validate(data: dict, origins: dict[tuple, str], default: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
            where = origin_of(loc, origins, default)
            problems.append(f"{where}: {format_loc(loc) or '(top level)'}: {describe_error(err)}")
        raise ConfigError(problems, "fix the fields above; nothing was built") from None


def load(paths: list[Path]) -> LoadedRecipe:
    """Load and validate `-c A -c B ...`: B overlays A; all problems reported at once."""
    merged: dict[str, Any] = {}
    origins: dict[tuple, str] = {}
    for path in paths:
        data = read_toml(path)
        provenance(data, str(path), origins)
        merged = merge(merged, data)
    resolve_restore_sources(merged, origins)
    return LoadedRecipe(validate(merged, origins, str(paths[0])), list(paths))


def resolve_restore_sources(merged: dict, origins: dict[tuple, str]) -> None:
    """restore[].source is relative to the recipe file that lists it (lists replace on
    merge, so one file set them all), not to wherever the pipeline was started from."""
    items = merged.get("restore")
    origin = origins.get(("restore",))
    if not isinstance(items, list) or origin is None:
        return
    base = Path(origin).resolve().parent
    for index, item in enumerate(items):
        source = item.get("source") if isinstance(item, dict) else None
        if isinstance(source, str) and source and "\0" not in source:
            if not Path(source).is_absolute():
                item["source"] = str(base / source)
            warn_outside(Path(item["source"]), base, f"{origin}: restore[{index}].source")


def warn_outside(source: Path, base: Path, where: str) -> None:
    """A source outside the recipe's folder (absolute, `..`, or a link out of it) is allowed
    but said aloud: it puts whatever that path holds on this host into the ISO."""
    resolved = source.resolve()
    if not resolved.is_relative_to(base):
        log.warn(f"{where}: {resolved} is outside the recipe's folder {base}; it goes into "
                 "the ISO's mydata.tgz (keep restore sources beside the recipe)")


def to_json(recipe: Recipe) -> str:
    return json.dumps(recipe.model_dump(mode="json"), indent=2, sort_keys=False)
