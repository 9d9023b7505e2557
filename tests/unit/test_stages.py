"""The stage engine: skip when unchanged, rebuild with reasons, no half-finished stages."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.engine import STAMP, Stage, StageRunner, outputs_of
from appliance.errors import StageError


@dataclass
class Recipe:
    a: int = 1
    b: int = 1


@dataclass
class Ctx:
    recipe: Recipe
    ran: list = field(default_factory=list)
    active_stages: tuple = ()


def producer(name, content_of):
    """A stage body that writes one output whose bytes depend on the recipe."""

    def run(ctx, work: Path):
        ctx.ran.append(name)
        out = work / f"{name}.out"
        out.write_text(content_of(ctx.recipe))
        return {"out": out}

    return run


def make_runner(tmp_path, *, idle_b=False, tool="1.0", third=None):
    data = tmp_path / "data"
    (data / "overlays" / "faasd").mkdir(parents=True, exist_ok=True)
    (data / "overlays" / "containerd").mkdir(parents=True, exist_ok=True)
    stages = [
        Stage("first", 1, lambda r: {"a": r.a}, producer("first", lambda r: f"a={r.a}")),
        Stage("second", 1, lambda r: {"b": r.b}, producer("second", lambda r: f"b={r.b}"),
              data="overlays", tools=(("mksquashfs", "-version"),),
              idle=(lambda r: "nothing requested") if idle_b else (lambda r: None)),
        Stage("third", 1, lambda r: None, third or producer("third", lambda r: "third")),
    ]
    return StageRunner(stages, tmp_path / "build", lambda argv: tool, data_root=data)


def actions(decisions):
    return {d.stage: d.action for d in decisions}


def test_second_run_with_nothing_changed_runs_nothing(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    assert ctx.ran == ["first", "second", "third"]
    ctx.ran.clear()
    decisions = runner.execute(ctx)
    assert ctx.ran == []
    assert actions(decisions) == {"first": "skip", "second": "skip", "third": "skip"}


def test_changed_input_reruns_that_stage_and_later_ones_with_reason(tmp_path, capsys):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    ctx.ran.clear()
    ctx.recipe.b = 2
    decisions = runner.execute(ctx)
    assert ctx.ran == ["second", "third"]
    by_stage = {d.stage: d for d in decisions}
    assert by_stage["second"].reasons == ["recipe b changed"]
    assert by_stage["third"].reasons == ["input second/out changed"]
    assert "second: rebuilding (recipe b changed)" in capsys.readouterr().err


def test_data_folder_change_names_the_subfolder(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    (tmp_path / "data" / "overlays" / "faasd" / "init").write_text("#!/bin/sh\n")
    decisions = runner.execute(ctx)
    assert {d.stage: d.reasons for d in decisions}["second"] == ["overlays/faasd changed"]


def test_tool_version_change_reruns(tmp_path):
    ctx = Ctx(Recipe())
    make_runner(tmp_path).execute(ctx)
    ctx.ran.clear()
    decisions = make_runner(tmp_path, tool="2.0").execute(ctx)
    assert ctx.ran == ["second"]  # same bytes out of it, so "third" stays up to date
    assert {d.stage: d.reasons for d in decisions}["second"] == [
        "tool 'mksquashfs -version' changed version"]


def test_force_reruns_only_that_stage_when_outputs_are_identical(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    ctx.ran.clear()
    runner.execute(ctx, force={"first"})
    assert ctx.ran == ["first"]  # same bytes out, so later stages stay up to date


def test_stage_killed_midway_leaves_no_finished_looking_output(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    ctx.recipe.a = 2

    def killed(ctx, work):
        (work / "first.out").write_text("partial")
        raise KeyboardInterrupt

    runner.stages[0] = Stage("first", 1, lambda r: {"a": r.a}, killed)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(ctx)
    build = tmp_path / "build"
    assert not (build / "first.tmp" / STAMP).exists()
    # the previous finished result is intact, still describing the old recipe
    assert (build / "first" / "first.out").read_text() == "a=1"
    runner.stages[0] = Stage("first", 1, lambda r: {"a": r.a}, producer("first", lambda r: f"a={r.a}"))
    decisions = runner.execute(ctx, until="first")
    assert decisions[0].reasons == ["recipe a changed"]
    assert (build / "first" / "first.out").read_text() == "a=2"
    assert not (build / "first.tmp").exists()


def test_deleted_output_triggers_rebuild(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    (tmp_path / "build" / "second" / "second.out").unlink()
    decisions = runner.execute(ctx, until="second")
    assert decisions[1].reasons == ["output out missing or changed"]


def test_noop_stage_does_not_block_until_of_a_later_stage(tmp_path):
    runner, ctx = make_runner(tmp_path, idle_b=True), Ctx(Recipe())
    decisions = runner.execute(ctx, until="third")
    assert actions(decisions) == {"first": "run", "second": "noop", "third": "run"}
    assert not (tmp_path / "build" / "second").exists()


def test_the_context_tells_a_stage_which_stages_take_part(tmp_path):
    seen = []

    def third(ctx, work: Path):
        seen.append(ctx.active_stages)
        (work / "t").write_text("t")
        return {"out": work / "t"}

    runner, ctx = make_runner(tmp_path, idle_b=True, third=third), Ctx(Recipe())
    runner.execute(ctx)
    assert seen == [("first", "third")]  # an idle stage is not part of the build


def test_plan_runs_nothing_and_explains(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    decisions = runner.execute(ctx, dry_run=True)
    assert ctx.ran == []
    assert [d.describe() for d in decisions] == [
        "first: would run (no previous build)",
        "second: would run (no previous build)",
        "third: would run (no previous build)",
    ]
    runner.execute(ctx)
    ctx.recipe.a = 5
    decisions = runner.execute(ctx, dry_run=True)
    assert actions(decisions) == {"first": "run", "second": "maybe", "third": "maybe"}


def test_stamp_records_outputs_relative_and_they_resolve(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    runner.execute(ctx)
    stamp = json.loads((tmp_path / "build" / "first" / STAMP).read_text())
    assert stamp["outputs"]["out"]["path"] == "first.out"
    assert outputs_of(tmp_path / "build", "first")["out"].read_text() == "a=1"


def test_unknown_until(tmp_path):
    with pytest.raises(StageError, match="unknown stage 'nope'"):
        make_runner(tmp_path).execute(Ctx(Recipe()), until="nope")


def test_a_stage_keyed_only_on_the_inputs_it_uses(tmp_path):
    runner, ctx = make_runner(tmp_path), Ctx(Recipe())
    third = runner.stages[2]
    runner.stages[2] = Stage(third.name, third.version, third.reads, third.run,
                             uses=("first/",))
    runner.execute(ctx)
    ctx.ran.clear()
    ctx.recipe.b = 2  # changes second's output, which third does not use
    runner.execute(ctx)
    assert ctx.ran == ["second"]
    ctx.recipe.a = 2
    runner.execute(ctx)
    assert ctx.ran == ["second", "first", "second", "third"]
