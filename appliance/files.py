"""Every file the pipeline itself writes (stamps, inputs.json, manifest, SHA256SUMS, the
lock) goes through here: whole or not at all, and a full disk or a read-only folder is one
error naming the file, never a traceback or a truncated file that looks finished."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.errors import PipelineError, StageError

NO_SPACE_HINT = "free space there (or fix its permissions) and rerun"


def write_text(path: Path, text: str, *, error: type[PipelineError] = StageError,
               hint: str = NO_SPACE_HINT) -> Path:
    """Write `text` to `path` through a temporary sibling renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise error(f"{path}: cannot write: {exc.strerror or exc}", hint) from None
    return path
