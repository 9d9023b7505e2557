"""Putting finished deliverables into out/ without ever showing a half-written file there.

Each file is first staged as `out/<name>.part` (a copy of the finished file), and only when
every one is staged are they
renamed into place. An export killed before that leaves the previous out/ files as they
were; at worst a stale `.part`, which the next publish overwrites.

After the renames, what the previous publish listed in its SHA256SUMS and this one does not
(a format dropped from `export.formats`, an old version's name) is removed: out/ holds the
deliverables of the last export and nothing that merely looks like one. Files the pipeline
never published there are left alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from appliance import log
from appliance.errors import StageError
from appliance.paths import claim

PART = ".part"
SUMS = "SHA256SUMS"


def sha256sums(digests: dict[Path, str]) -> str:
    """`sha256sum -c` input: `<hex>  <name>` (two spaces: text mode), by name."""
    return "".join(f"{digests[p]}  {p.name}\n" for p in sorted(digests, key=lambda p: p.name))


def listed(sums: Path) -> set[str]:
    """The file names a SHA256SUMS lists (none when it is missing or unreadable)."""
    try:
        text = sums.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    names = set()
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            name = parts[1].lstrip("*")
            if name and "/" not in name and name not in (".", ".."):
                names.add(name)
    return names


def remove_stale(out_dir: Path, previous: set[str], current: list[Path]) -> list[Path]:
    keep = {p.name for p in current}
    removed = []
    for name in sorted(previous - keep):
        path = out_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def stage_copy(src: Path, part: Path) -> None:
    # A copy, never a hard link: someone who boots out/x.qcow2 in place must not change the
    # build's own copy, which the engine would then take for up to date.
    part.unlink(missing_ok=True)
    shutil.copyfile(src, part)
    os.chmod(part, 0o644)


def publish(files: list[Path], out_dir: Path) -> list[Path]:
    """Place `files` in `out_dir` under their own names, in the order given."""
    try:
        claim(out_dir)
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
    previous = listed(out_dir / SUMS)
    finals = [out_dir / f.name for f in files]
    for part, final in zip(parts, finals, strict=True):
        os.replace(part, final)
    for path in remove_stale(out_dir, previous, finals):
        log.detail(f"export: removed {path} (not part of this export)")
    return finals
