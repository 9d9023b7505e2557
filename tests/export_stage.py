"""The export stage driven by the real stage engine, for the unit and tools tests.

A stand-in packer stage (the real one is built elsewhere) hands over a given qcow2 and a
build.json through the engine, so build/packer/stamp.json is written exactly as the engine
writes it; the export stage is appliance.stages.export.stage.STAGE. Deliverables go to
`<tmp>/out` (APPLIANCE_OUT), the build to `<tmp>/build`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from appliance import config
from appliance.context import Context
from appliance.engine import Decision, Stage, StageRunner
from appliance.fetch import Fetcher
from appliance.lock import Lock, Pin, identity
from appliance.stages.export import stage as export_stage

EPOCH = 1_700_000_000
RECIPE = """
name = "tca"
version = "1.2.3"
source_date_epoch = 1700000000
[tinycore]
mirrors = ["http://127.0.0.1:9/"]
guest_mirror = "http://10.0.2.2:9/"
[vm]
cpus = 2
memory_mb = 1536
"""
BUILD_JSON = {"accelerator": "tcg", "install_mode": "traditional",
              "phases": {"boot": 61.5, "install": 120.25}, "packer_version": "1.6.6"}
PINS = (
    Pin("iso", "CorePure64-11.1.iso", "11.1",
        "http://127.0.0.1:9/11.x/x86_64/release/CorePure64-11.1.iso", "1" * 64, "2" * 32,
        "md5 from CorePure64-11.1.iso.md5.txt"),
    Pin("release/containerd", "containerd-1.7.0-linux-amd64.tar.gz", "1.7.0",
        "http://127.0.0.1:9/containerd-1.7.0-linux-amd64.tar.gz", "3" * 64, None,
        "sha256 from containerd-1.7.0-linux-amd64.tar.gz.sha256sum"),
)
EXPORT = export_stage.STAGE
BASE = "tca-1.2.3"


@dataclass
class Harness:
    tmp: Path
    disk: Path  # what the stand-in packer stage hands over as its qcow2
    runner: object  # appliance.run.Runner, or a fake with the same run()
    build_json: dict = field(default_factory=lambda: dict(BUILD_JSON))

    @property
    def build_root(self) -> Path:
        return self.tmp / "build"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def packer(self, ctx, work: Path) -> dict[str, Path]:
        disk = work / "packer-tca.qcow2"
        shutil.copyfile(self.disk, disk)
        (work / "build.json").write_text(json.dumps(self.build_json))
        return {"qcow2": disk, "build.json": work / "build.json"}

    def engine(self, *, with_packer: bool = True) -> StageRunner:
        """Without the packer stage, export reads whatever build/packer/ holds."""
        stages = [Stage("packer", 1, lambda r: None, self.packer)] if with_packer else []
        return StageRunner([*stages, EXPORT], self.build_root, lambda argv: "test 1.0")

    def context(self, extra: str = "") -> Context:
        path = self.tmp / "recipe" / "appliance.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(extra + RECIPE)  # top-level keys before the first table
        loaded = config.load([path])
        lock = Lock(identity(loaded.recipe), {p.key: p for p in PINS})
        return Context(loaded, lock, Fetcher(self.tmp / "downloads", offline=True),
                       self.runner, self.build_root)

    def build(self, extra: str = "", **kwargs) -> dict[str, Decision]:
        decisions = self.engine(**kwargs).execute(self.context(extra))
        return {d.stage: d for d in decisions}

    def packer_disk(self) -> Path:
        return self.build_root / "packer" / "packer-tca.qcow2"

    def out_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir())}


def harness(tmp: Path, disk: Path, runner, monkeypatch) -> Harness:
    monkeypatch.setenv("APPLIANCE_OUT", str(tmp / "out"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return Harness(tmp, disk, runner)
