"""Putting finished deliverables into out/ without ever showing a half-written file there.

Each file is first staged as `out/<name>.part` (a copy of the finished file), and only when
every one is staged are they
renamed into place. An export killed before that leaves the previous out/ files as they
were; at worst a stale `.part`, which the next publish overwrites.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from appliance.errors import StageError

PART = ".part"


def sha256sums(digests: dict[Path, str]) -> str:
    """`sha256sum -c` input: `<hex>  <name>` (two spaces: text mode), by name."""
    return "".join(f"{digests[p]}  {p.name}\n" for p in sorted(digests, key=lambda p: p.name))


def stage_copy(src: Path, part: Path) -> None:
    # A copy, never a hard link: someone who boots out/x.qcow2 in place must not change the
    # build's own copy, which the engine would then take for up to date.
    part.unlink(missing_ok=True)
    shutil.copyfile(src, part)
    os.chmod(part, 0o644)


def publish(files: list[Path], out_dir: Path) -> list[Path]:
    """Place `files` in `out_dir` under their own names, in the order given."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"cannot create {out_dir}: {exc.strerror or exc}",
                         "point APPLIANCE_OUT at a writable folder") from None
    parts = [out_dir / (f.name + PART) for f in files]
    try:
        for src, part in zip(files, parts, strict=True):
            stage_copy(src, part)
    except OSError as exc:
        for part in parts:
            part.unlink(missing_ok=True)
        raise StageError(f"cannot write {out_dir}: {exc.strerror or exc}; the files already "
                         "there were left as they were", "free space there and rerun") from None
    finals = [out_dir / f.name for f in files]
    for part, final in zip(parts, finals, strict=True):
        os.replace(part, final)
    return finals
