"""Kernel readiness: judge a kernel config against kernel/options.toml (`kernel-check`).

The question the original notes answered by trial and error (no overlay, no bridge, no
memory cgroup) is answered here from the config alone, before anything boots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.errors import PipelineError
from appliance.paths import data_dir
from appliance.stages.kernel.kconfig import (
    ConfigFormatError,
    Option,
    OptionList,
    parse_config,
    parse_options,
)

OPTIONS_FILE = data_dir("kernel") / "options.toml"


@dataclass(frozen=True)
class Verdict:
    name: str
    level: str  # required / recommended
    ok: bool
    state: str  # "built in", "module", "not set", "set"
    how: str  # where a module comes from, or what the appliance wants
    breaks: str


def load_options(path: Path = OPTIONS_FILE) -> OptionList:
    try:
        return parse_options(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ConfigFormatError) as exc:
        raise PipelineError(f"kernel option list unreadable: {exc}") from None


def read_config(text: str, source: str) -> dict[str, str]:
    """A kernel .config, or a clear error naming the file when it is not one."""
    try:
        config = parse_config(text, source)
    except ConfigFormatError as exc:
        raise PipelineError(str(exc), "pass a kernel .config file (e.g. config-5.4.3-tinycore64)"
                            ) from None
    if not {"MODULES", "64BIT", "X86_64", "NET"} & set(config):
        raise PipelineError(f"{source}: no core symbols (MODULES, NET, 64BIT): a truncated or "
                            "partial kernel config", "pass the complete .config of the kernel")
    return config


BASE_INITRAMFS = "corepure64.gz"  # ships_in of a module tc11 has in its base


def module_source(option: Option, built: dict[str, str]) -> str:
    """e.g. 'bridge.ko in net-bridging-KERNEL.tcz', 'veth.ko in the base initramfs
    (corepure64.gz)'."""
    if not option.module:
        return "(compatibility symbol, no module of its own)"
    where = built.get(option.module) or option.ships_in
    if where == BASE_INITRAMFS:
        where = f"the base initramfs ({where})"
    return f"{option.module}.ko" + (f" in {where}" if where else "")


def judge_one(option: Option, config: dict[str, str], built: dict[str, str]) -> Verdict:
    """One option against one config; `built` maps module -> where our kernel stage ships it."""
    value = config.get(option.name, "n")
    state = {"y": "built in", "m": "module", "n": "not set"}.get(value, f"set to {value}")
    want, how, ok = option.wanted, "", True
    if want == "off":
        ok, how = value == "n", "" if value == "n" else "(must not be set)"
    elif want == "y":
        ok = value == "y"
        how = "" if ok else "(must be built in: the disk root is mounted without an initrd)"
    elif want == "on" and value == "m":
        how = module_source(option, built)
    elif want == "on" and value == "n" and option.module in built:
        state, how = "module", module_source(option, built)
    elif want == "on":
        ok = value == "y"
    return Verdict(option.name, option.level, ok, state, how, "" if ok else option.breaks)


def judge(config: dict[str, str], options: OptionList, built: dict[str, str] | None = None
          ) -> list[Verdict]:
    """Every option the appliance cares about (want != any), required first."""
    built = built or {}
    judged = [judge_one(o, config, built) for o in options.options if o.wanted != "any"]
    return sorted(judged, key=lambda v: v.level != "required")


def missing_required(verdicts: list[Verdict]) -> list[str]:
    return [v.name for v in verdicts if v.level == "required" and not v.ok]


def render(verdicts: list[Verdict], source: str) -> str:
    lines = [f"kernel config: {source}"]
    for level in ("required", "recommended"):
        group = [v for v in verdicts if v.level == level]
        lines += ["", f"{level.upper()} ({sum(v.ok for v in group)}/{len(group)} met)"]
        width = max((len(v.name) for v in group), default=0)
        for v in group:
            mark = "ok  " if v.ok else ("MISS" if level == "required" else "warn")
            detail = " ".join(x for x in (v.state, v.how) if x)
            lines.append(f"  {mark}  {v.name:<{width}}  {detail}")
            if v.breaks:
                lines.append(f"        {'':<{width}}  -> {v.breaks}")
    missing = missing_required(verdicts)
    lines += ["", "result: every required option is met" if not missing else
              f"result: {len(missing)} required option(s) missing: {', '.join(missing)}"]
    return "\n".join(lines)


def to_json(verdicts: list[Verdict], source: str) -> str:
    return json.dumps({"config": source, "ready": not missing_required(verdicts),
                       "missing_required": missing_required(verdicts),
                       "options": [asdict(v) for v in verdicts]}, indent=2)
