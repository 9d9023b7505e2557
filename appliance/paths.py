"""Where things live: the checkout, build/, out/ and the (movable) cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Machinery templates the engine ships (the OVF envelope, the accelerator probe source).
RESOURCES = Path(__file__).resolve().parent / "resources"


# Written into build/, out/ and cache/ when the pipeline creates them; `clean` deletes only
# folders that carry it, so APPLIANCE_OUT=~/images never costs a user their own files.
MARKER = ".tc-appliance"
MARKER_TEXT = ("made by tc-appliance (pipeline.py); `pipeline.py clean` may delete this "
               "folder and everything in it\n")


def claim(root: Path) -> Path:
    """Create `root` with the marker if it does not exist yet; an existing folder is used
    as it is and never marked (the pipeline did not make it)."""
    if not root.exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text(MARKER_TEXT)
    return root


def made_by_pipeline(root: Path) -> bool:
    return (root / MARKER).is_file()


def cache_root() -> Path:
    """cache/ of the checkout, or $APPLIANCE_CACHE (CI on a reused machine keeps it warm)."""
    env = os.environ.get("APPLIANCE_CACHE")
    return Path(env).resolve() if env else REPO / "cache"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def build_root() -> Path:
    """build/ of the checkout, or $APPLIANCE_BUILD (tests build in a temporary folder)."""
    env = os.environ.get("APPLIANCE_BUILD")
    return Path(env).resolve() if env else REPO / "build"


def out_root() -> Path:
    """out/ of the checkout, or $APPLIANCE_OUT."""
    env = os.environ.get("APPLIANCE_OUT")
    return Path(env).resolve() if env else REPO / "out"


def data_dir(name: str) -> Path:
    """A product data folder of the checkout (packer, iso-remaster, overlays, kernel)."""
    return REPO / name
