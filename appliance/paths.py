"""Where things live: the checkout, build/, out/ and the (movable) cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Machinery templates the engine ships (the OVF envelope, the accelerator probe source).
RESOURCES = Path(__file__).resolve().parent / "resources"


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
