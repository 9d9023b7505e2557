"""The one error hierarchy: every user-facing failure is a PipelineError with a hint."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on; printed as message + hint, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(PipelineError):
    """The recipe (or an override file) is invalid; lists every problem at once."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems), hint)


class UsageError(PipelineError):
    """A command-line argument is unusable (exit 2, as argparse's own usage errors)."""

    exit_code = 2


class ToolError(PipelineError):
    """An external program failed or is missing."""


class FetchError(PipelineError):
    """A download failed on every mirror, or is not available offline."""


class ChecksumError(FetchError):
    """Downloaded bytes do not match the expected digest."""


class LockError(PipelineError):
    """The lock file is missing a pin, out of date, or disagrees with what was fetched."""

    exit_code = 2


class StageError(PipelineError):
    """A stage could not produce its outputs."""


class DependencyError(PipelineError):
    """A Tiny Core extension dependency is missing or cyclic."""


class RemasterError(StageError):
    """The base ISO or a remaster input is unusable (nothing is written)."""
