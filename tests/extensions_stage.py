"""The extensions stage run as a user runs it on the stand-in, once per pytest process, for
the tools and vm tests: the whole stand-in recipe (its image included) served on free ports
by tests/kernel_stage.py (mirror and registry), `pipeline.py lock`, then
`pipeline.py build --until extensions --locked` into a temporary build folder. The kernel
stage's own tests drop the recipe's images, so this is a build of its own (the kernel stage
builds overlay.ko in about 20 s)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tests import kernel_stage


@dataclass
class ExtensionsBuild:
    run: kernel_stage.StageRun
    result: object  # subprocess.CompletedProcess
    seconds: float

    @property
    def folder(self) -> Path:
        return self.run.build / "extensions"

    def listing(self) -> dict:
        return json.loads((self.folder / "extensions.json").read_text())

    def path(self, name: str) -> Path:
        """An extension of the load order, wherever its stage put it."""
        entry = self.listing()["extensions"][name]
        path = Path(entry["path"])
        return path if path.is_absolute() else self.folder / path


_done: dict[str, ExtensionsBuild] = {}


def stage_seconds(build: Path, stage: str) -> float:
    return json.loads((build / stage / "stamp.json").read_text())["seconds"]


def built(root: Path) -> ExtensionsBuild:
    """The stand-in recipe built up to the extensions stage (raises with the log if not)."""
    if "build" not in _done:
        run = kernel_stage.stage_run(root)
        locked = run.pipeline("lock", "--accept-first-use")  # the stand-in: see server.lock_argv
        if locked.returncode != 0:
            raise AssertionError(f"pipeline.py lock of the stand-in failed:\n"
                                 f"{locked.stderr[-3000:]}")
        start = time.monotonic()
        result = run.pipeline("build", "--until", "extensions", "--locked")
        _done["build"] = ExtensionsBuild(run, result, time.monotonic() - start)
    done = _done["build"]
    if done.result.returncode != 0:
        raise AssertionError(f"build --until extensions failed:\n{done.result.stderr[-4000:]}")
    return done
