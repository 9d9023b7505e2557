"""The context every stage receives, and the choice of lock a build runs with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance import lock as lockfile
from appliance import log
from appliance.config import LoadedRecipe, Recipe
from appliance.errors import LockError
from appliance.fetch import Fetcher
from appliance.run import Runner


@dataclass
class Context:
    loaded: LoadedRecipe
    lock: lockfile.Lock
    fetcher: Fetcher
    runner: Runner
    build_root: Path
    dry_run: bool = False  # `plan`: read only, never make anything (not even the build key)
    # Set by the engine before any stage runs: the stages that take part in this recipe's
    # build, in order (a stage asks this instead of importing the stage list).
    active_stages: tuple[str, ...] = ()

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe


def select_lock(loaded: LoadedRecipe, path: Path, *, locked: bool, offline: bool,
                fetcher: Fetcher) -> lockfile.Lock:
    """--locked: the lock must be current. Otherwise a current lock is used, a missing or
    stale one is reported and the pins are resolved afresh (not written)."""
    current = lockfile.read(path)
    if locked:
        return lockfile.ensure_current(current, loaded.recipe, path)
    if current is not None and not lockfile.staleness(current, loaded.recipe):
        return current
    state = "is out of date with the recipe" if current else "does not exist"
    if offline:
        raise LockError(f"{path} {state}, and --offline cannot resolve pins",
                        "run `python pipeline.py lock` while online")
    log.warn(f"{path} {state}; resolving pins from upstream checksum files (not written; "
             "run `python pipeline.py lock` to record them)")
    return lockfile.resolve(loaded.recipe, fetcher)
