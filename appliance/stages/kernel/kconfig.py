"""Pure functions over kernel configs and kernel/options.toml (no files, no subprocesses).

Shared by `kernel-check`, the kernel stage and the stand-in kernel build: they take text and
return data, so callers decide where the text comes from.

A config maps a symbol (without CONFIG_) to its value as written after `=`: `y`, `m`, `123`,
`"string"` (quotes kept, so a string never looks like a bool); `n` for `# CONFIG_X is not set`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

SYMBOL = r"[A-Za-z0-9_]+"
_SET = re.compile(rf"^CONFIG_({SYMBOL})=(.*)$")
_UNSET = re.compile(rf"^# CONFIG_({SYMBOL}) is not set$")
_KCONFIG_DEF = re.compile(rf"^\s*(?:menu)?config\s+({SYMBOL})\s*$", re.MULTILINE)

TRISTATE = ("y", "m", "n")
LEVELS = ("required", "recommended")
COMPONENTS = (
    "boot",
    "install",
    "tce-load",
    "kernel-modules",
    "kernel-check",
    "runc",
    "containerd",
    "cni",
    "faasd",
    "iptables",
)
_OPTION_KEYS = {
    "name",
    "tc11",
    "level",
    "component",
    "breaks",
    "ships_in",
    "module",
    "name_6_1",
    "value_6_1",
    "note",
    "want",
}
WANTS = ("on", "y", "off", "any")
_RETIRED_KEYS = {"name", "replaced_by", "note"}


class ConfigFormatError(ValueError):
    """A config or options file is malformed; the message names the file and line."""


def parse_config(text: str, source: str = "<config>") -> dict[str, str]:
    """Parse a kernel .config (or a fragment in the same syntax) into {symbol: value}."""
    config: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if m := _SET.match(line):
            config[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            config[m.group(1)] = "n"
        elif not line.startswith("#"):
            raise ConfigFormatError(
                f"{source}:{number}: not a kernel config line: {raw[:80]!r} "
                "(expected CONFIG_X=value, '# CONFIG_X is not set' or a # comment)"
            )
    if not config:
        raise ConfigFormatError(f"{source}: no CONFIG_ lines: not a kernel config")
    return config


def value_of(config: dict[str, str], name: str) -> str:
    """A symbol's value; absent means unset, which Kconfig treats as n."""
    return config.get(name, "n")


def kconfig_symbols(text: str) -> set[str]:
    """Symbols defined (`config X` / `menuconfig X`) in the text of a Kconfig file."""
    return set(_KCONFIG_DEF.findall(text))


@dataclass(frozen=True)
class Option:
    name: str
    tc11: str
    level: str
    component: str
    breaks: str
    ships_in: str = ""
    module: str = ""
    name_6_1: str = ""
    value_6_1: str = ""
    note: str = ""
    want: str = ""

    @property
    def wanted(self) -> str:
        """What kernel-check asks of a kernel: on, y, off or any."""
        return self.want or ("on" if self.tc11 in ("y", "m") else "any")


@dataclass(frozen=True)
class Retired:
    name: str
    replaced_by: str
    note: str = ""


@dataclass(frozen=True)
class OptionList:
    options: tuple[Option, ...]
    retired: tuple[Retired, ...]

    def by_name(self) -> dict[str, Option]:
        return {o.name: o for o in self.options}


def parse_options(text: str, source: str = "options.toml") -> OptionList:
    """Parse and validate kernel/options.toml; every problem is reported at once."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFormatError(f"{source}: {exc}") from exc
    problems = [f"unknown top-level key {k!r}" for k in data if k not in ("option", "retired")]
    options = [_option(i, raw, problems) for i, raw in enumerate(data.get("option", []))]
    retired = [_retired(i, raw, problems) for i, raw in enumerate(data.get("retired", []))]
    names = [o.name for o in options] + [r.name for r in retired]
    problems += [f"{n} is listed twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ConfigFormatError(f"{source}:\n  " + "\n  ".join(problems))
    return OptionList(tuple(options), tuple(retired))


def _option(index: int, raw: dict, problems: list[str]) -> Option:
    where = f"option #{index + 1} ({raw.get('name', '?')})"
    problems += [f"{where}: unknown key {k!r}" for k in raw if k not in _OPTION_KEYS]
    problems += [
        f"{where}: missing {k!r}"
        for k in ("name", "tc11", "level", "component", "breaks")
        if not raw.get(k)
    ]
    checks = (("tc11", TRISTATE), ("level", LEVELS), ("component", COMPONENTS))
    for key, allowed in checks:
        if raw.get(key) and raw[key] not in allowed:
            problems.append(f"{where}: {key} = {raw[key]!r}, expected one of {', '.join(allowed)}")
    if raw.get("value_6_1") and (not raw.get("name_6_1") or raw["value_6_1"] not in TRISTATE):
        problems.append(f"{where}: value_6_1 needs name_6_1 and one of y, m, n")
    if raw.get("name", "").startswith("CONFIG_"):
        problems.append(f"{where}: name is written without CONFIG_")
    if raw.get("module") and raw.get("tc11") == "y":
        problems.append(f"{where}: module given but tc11 builds it in")
    if raw.get("want") and raw["want"] not in WANTS:
        problems.append(f"{where}: want = {raw['want']!r}, expected one of {', '.join(WANTS)}")
    if raw.get("tc11") == "n" and not raw.get("want"):
        problems.append(f"{where}: tc11 leaves it unset, so it must say what it wants (want = ...)")
    fields = {k: str(v) for k, v in raw.items() if k in _OPTION_KEYS}
    fields.setdefault("name", "?")
    for key in ("tc11", "level", "component", "breaks"):
        fields.setdefault(key, "")
    return Option(**fields)


def _retired(index: int, raw: dict, problems: list[str]) -> Retired:
    where = f"retired #{index + 1} ({raw.get('name', '?')})"
    problems += [f"{where}: unknown key {k!r}" for k in raw if k not in _RETIRED_KEYS]
    problems += [f"{where}: missing {k!r}" for k in ("name", "replaced_by") if not raw.get(k)]
    return Retired(
        name=str(raw.get("name", "?")),
        replaced_by=str(raw.get("replaced_by", "")),
        note=str(raw.get("note", "")),
    )


def scripts_config_argv(settings: dict[str, str], config_file: str = ".config") -> list[str]:
    """`scripts/config` arguments that set each symbol to its value, in the given order."""
    argv = ["scripts/config", "--file", config_file]
    for name, value in settings.items():
        if value == "y":
            argv += ["--enable", name]
        elif value == "m":
            argv += ["--module", name]
        elif value == "n":
            argv += ["--disable", name]
        elif value.startswith('"') and value.endswith('"') and len(value) >= 2:
            argv += ["--set-str", name, value[1:-1]]
        else:
            argv += ["--set-val", name, value]
    return argv


def verify_settings(settings: dict[str, str], final: dict[str, str], known: set[str]) -> list[str]:
    """Each symbol whose value in the final .config is not the one asked for, explained.

    `known` is every symbol the kernel source defines: a symbol outside it is reported as
    missing from this kernel (fix the data with name_6_1), never skipped silently.
    """
    problems = []
    for name, want in settings.items():
        if name not in known:
            problems.append(f"{name}: not defined by this kernel's Kconfig (renamed or removed?)")
            continue
        got = value_of(final, name)
        if got != want:
            hint = " (a dependency is missing)" if name not in final else ""
            problems.append(f"{name}: wanted {want}, the final .config has {got}{hint}")
    return problems
