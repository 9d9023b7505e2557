"""The stage engine: a fixed order, content keys, stamps, skip/rebuild with reasons.

Each stage works in `build/<stage>.tmp/` and is renamed to `build/<stage>/` only when it
succeeded, with `stamp.json` recording its key components and outputs, so a killed build
never leaves something a later run mistakes for finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import files, log
from appliance.errors import StageError
from appliance.fetch import sha256_file
from appliance.paths import REPO

STAMP = "stamp.json"


@dataclass(frozen=True)
class Stage:
    name: str
    version: int  # bump when the stage's code changes what it produces
    reads: Callable[[Any], Any]  # the recipe slice the stage reads
    run: Callable[..., dict[str, Path]]  # (ctx, work_dir) -> outputs
    data: str | None = None  # the product data folder the stage reads
    tools: tuple[tuple[str, ...], ...] = ()  # argv that prints each tool's version
    idle: Callable[[Any], str | None] = lambda recipe: None  # why it has nothing to do
    # Key material beyond the recipe slice, from the context (e.g. the exact pins it uses).
    extra: Callable[[Any], Any] | None = None
    # Prefixes of the earlier outputs the stage reads ("fetch/kernel/"); empty: all of them.
    # Without it a new containerd version would rebuild the kernel modules.
    uses: tuple[str, ...] = ()


@dataclass
class Decision:
    stage: str
    action: str  # "run", "skip", "maybe" (plan only), "noop"
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> str:
        why = "; ".join(self.reasons)
        labels = {"run": "would run", "skip": "up to date", "noop": "nothing to do",
                  "maybe": "up to date so far"}
        return f"{self.stage}: {labels[self.action]}" + (f" ({why})" if why else "")


def digest_json(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """Digest per top-level entry of a data folder: paths, modes and contents."""
    if not root.exists():
        return {}
    result = {}
    for top in sorted(root.iterdir()):
        h = hashlib.sha256()
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*"))
        for path in files:
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode & 0o7777
            h.update(f"{rel}\0{mode:o}\0".encode())
            if path.is_symlink():
                h.update(str(path.readlink()).encode())
            elif path.is_file():
                h.update(sha256_file(path).encode())
        result[f"{root.name}/{top.name}"] = h.hexdigest()
    return result


class StageRunner:
    """Runs an ordered stage list against `build_root`, deciding what to rebuild."""

    def __init__(self, stages: list[Stage], build_root: Path, tool_version: Callable[[tuple], str],
                 data_root: Path = REPO):
        self.stages = stages
        self.build_root = build_root
        self.tool_version = tool_version
        self.data_root = data_root

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def select(self, until: str | None) -> list[Stage]:
        if until is None:
            return list(self.stages)
        if until not in self.names():
            raise StageError(f"unknown stage '{until}'", f"stages are: {', '.join(self.names())}")
        return self.stages[: self.names().index(until) + 1]

    def components(self, stage: Stage, recipe: Any, inputs: dict[str, str], extra: Any) -> dict:
        data = tree_digests(self.data_root / stage.data) if stage.data else {}
        return {
            "stage": stage.name,
            "version": stage.version,
            "recipe": stage.reads(recipe),
            "extra": extra,
            "inputs": {k: v for k, v in inputs.items()
                       if not stage.uses or k.startswith(stage.uses)},
            "data": data,
            "tools": {" ".join(t): self.tool_version(t) for t in stage.tools},
        }

    def read_stamp(self, stage: Stage) -> dict | None:
        path = self.build_root / stage.name / STAMP
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def decide(self, stage: Stage, comps: dict, forced: bool, upstream_ran: bool) -> Decision:
        stamp = self.read_stamp(stage)
        if forced:
            return Decision(stage.name, "run", ["forced with --force"])
        if stamp is None:
            return Decision(stage.name, "run", ["no previous build"])
        reasons = changed(stamp.get("components", {}), comps)
        reasons += missing_outputs(self.build_root / stage.name, stamp.get("outputs", {}))
        if upstream_ran and not reasons:
            return Decision(stage.name, "maybe", ["runs again if an earlier stage's outputs change"])
        return Decision(stage.name, "run" if reasons else "skip", reasons)

    def execute(self, ctx: Any, until: str | None = None, force: set[str] = frozenset(),
                dry_run: bool = False) -> list[Decision]:
        decisions: list[Decision] = []
        inputs: dict[str, str] = {}
        upstream_ran = False
        # What a stage may know of the others travels in the context, never by importing
        # the stage list: which stages take part in this recipe's build, in order.
        ctx.active_stages = tuple(s.name for s in self.stages if s.idle(ctx.recipe) is None)
        for stage in self.select(until):
            why_idle = stage.idle(ctx.recipe)
            if why_idle:
                decisions.append(Decision(stage.name, "noop", [why_idle]))
                log.say(f"{stage.name}: nothing to do ({why_idle})") if not dry_run else None
                continue
            comps = self.components(stage, ctx.recipe, inputs, stage.extra(ctx) if stage.extra else None)
            decision = self.decide(stage, comps, stage.name in force, upstream_ran and dry_run)
            decisions.append(decision)
            if dry_run:
                # assume a rerun reproduces the recorded outputs; later stages say "maybe"
                upstream_ran = upstream_ran or decision.action in ("run", "maybe")
                stamp = self.read_stamp(stage) or {"outputs": {}}
            else:
                stamp = self.run_stage(stage, ctx, comps, decision)
            inputs.update({f"{stage.name}/{k}": v["sha256"] for k, v in stamp["outputs"].items()})
        return decisions

    def run_stage(self, stage: Stage, ctx: Any, comps: dict, decision: Decision) -> dict:
        final = self.build_root / stage.name
        if decision.action == "skip":
            log.say(f"{stage.name}: up to date, skipped")
            return self.read_stamp(stage) or {}
        log.say(f"{stage.name}: {'rebuilding' if final.exists() else 'building'} "
                f"({'; '.join(decision.reasons)})")
        work = self.build_root / f"{stage.name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        start = time.monotonic()
        outputs = stage.run(ctx, work)
        stamp = {
            "key": digest_json(comps),
            "components": comps,
            "outputs": describe_outputs(outputs, work),
            "seconds": round(time.monotonic() - start, 3),
        }
        files.write_text(work / STAMP, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        replace_dir(work, final)
        log.say(f"{stage.name}: done in {stamp['seconds']:.1f} s")
        return stamp


def describe_outputs(outputs: dict[str, Path], work: Path) -> dict[str, dict]:
    """Outputs inside the work dir are stored relative (they move with the rename)."""
    result = {}
    for name, path in sorted(outputs.items()):
        path = Path(path)
        try:
            shown = path.relative_to(work).as_posix()
        except ValueError:
            shown = str(path)
        result[name] = {"path": shown, "sha256": sha256_file(path), "size": path.stat().st_size}
    return result


def output_path(stage_dir: Path, recorded: str) -> Path:
    path = Path(recorded)
    return path if path.is_absolute() else stage_dir / path


def missing_outputs(stage_dir: Path, outputs: dict[str, dict]) -> list[str]:
    reasons = []
    for name, meta in outputs.items():
        path = output_path(stage_dir, meta["path"])
        if not path.exists() or path.stat().st_size != meta.get("size"):
            reasons.append(f"output {name} missing or changed")
    return reasons


def changed(old: dict, new: dict) -> list[str]:
    """Human reasons for a key change, e.g. 'overlays/faasd changed'."""
    reasons = []
    if old.get("version") != new["version"]:
        reasons.append(f"stage code changed (version {old.get('version')} -> {new['version']})")
    reasons += [f"recipe {k} changed" for k in diff_keys(old.get("recipe"), new["recipe"])]
    if old.get("extra") != new["extra"]:
        reasons.append("pinned inputs changed")
    reasons += [f"input {k} changed" for k in diff_keys(old.get("inputs"), new["inputs"])]
    reasons += [f"{k} changed" for k in diff_keys(old.get("data"), new["data"])]
    reasons += [f"tool '{k}' changed version" for k in diff_keys(old.get("tools"), new["tools"])]
    return reasons


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += diff_keys(old.get(key), new.get(key), f"{prefix}{key}" if not prefix
                             else f"{prefix}.{key}")
        return out
    return [] if old == new else [prefix or "(all)"]


def replace_dir(work: Path, final: Path) -> None:
    """Swap the finished work dir into place; the old result is removed only afterwards."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def outputs_of(build_root: Path, stage: str) -> dict[str, Path]:
    """The recorded outputs of a finished stage (for the stages that consume them)."""
    stamp_path = build_root / stage / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        raise StageError(f"{stage}: no finished output in {build_root / stage}",
                         f"run `python pipeline.py build --until {stage}` first") from None
    return {n: output_path(build_root / stage, m["path"]) for n, m in stamp["outputs"].items()}
