"""The pipeline's stages in their fixed order: fetch -> kernel -> extensions -> remaster ->
packer -> export. Only this module knows the order, and no stage imports it: what a stage
must know of the others comes through the context (appliance/context.py)."""

from __future__ import annotations

from pathlib import Path

from appliance.engine import StageRunner
from appliance.stages import fetch
from appliance.stages.export import stage as export
from appliance.stages.extensions import stage as extensions
from appliance.stages.kernel import stage as kernel
from appliance.stages.packer import stage as packer
from appliance.stages.remaster import stage as remaster
from appliance.tools import tool_version

STAGES = [fetch.STAGE, kernel.STAGE, extensions.STAGE, remaster.STAGE, packer.STAGE,
          export.STAGE]
STAGE_NAMES = [s.name for s in STAGES]


def stage_runner(build_root: Path) -> StageRunner:
    return StageRunner(STAGES, build_root, tool_version)
