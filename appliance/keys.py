"""The build SSH key (docs/decisions.md#build-key): ed25519, made once per checkout under
cache/keys/ (0600) and reused, so the remastered ISO stays reproducible. Its public half goes
into the live ISO's build.gz; its private half only to Packer, never into an ISO or an output.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from appliance import log
from appliance.errors import RemasterError
from appliance.run import Runner

KEY_NAME = "build_ed25519"
COMMENT = "tc-appliance-build"  # no user@host: the same key text on every machine


def key_path(keys_dir: Path) -> Path:
    return keys_dir / KEY_NAME


def keygen_argv(path: Path) -> list[str]:
    """The ssh-keygen command that makes the key (pure)."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", COMMENT, "-f", str(path)]


def build_key(keys_dir: Path, runner: Runner) -> tuple[Path, str]:
    """(private key path, public key line); made on first use, kept 0600 afterwards."""
    private = key_path(keys_dir)
    public = private.with_name(private.name + ".pub")
    if not (private.is_file() and public.is_file()):
        generate(keys_dir, runner)
    if private.stat().st_mode & 0o077:
        private.chmod(0o600)  # ssh refuses a private key others can read
        log.warn(f"{private}: was readable by others; made 0600")
    text = public.read_text().strip()
    if not text.startswith("ssh-ed25519 "):
        raise RemasterError(f"{public}: not an ed25519 public key",
                            f"delete {private} and {public}; the next build makes a new pair")
    return private, text


def existing_public(keys_dir: Path) -> str | None:
    """The public key line if the pair exists (read only: for `plan`)."""
    private = key_path(keys_dir)
    public = private.with_name(private.name + ".pub")
    if not (private.is_file() and public.is_file()):
        return None
    try:
        return public.read_text().strip()
    except OSError:
        return None


def generate(keys_dir: Path, runner: Runner) -> None:
    """A new pair, written beside the final names and renamed: never half a key pair."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    tmp = keys_dir / f".{KEY_NAME}.{os.getpid()}"
    for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
        stale.unlink(missing_ok=True)
    runner.run(keygen_argv(tmp), log="keys")
    os.chmod(tmp, 0o600)
    os.replace(tmp.with_name(tmp.name + ".pub"), key_path(keys_dir).with_name(KEY_NAME + ".pub"))
    os.replace(tmp, key_path(keys_dir))
    log.say(f"made the build SSH key {key_path(keys_dir)} (kept for every later build)")


def public_digest(public_key: str) -> str:
    return hashlib.sha256(public_key.strip().encode()).hexdigest()
