"""Test doubles for the pipeline's own seams (never for the product): a recording runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.run import Result


@dataclass
class FakeRunner:
    """Records argv; answers with `respond(argv) -> (returncode, output)`."""

    respond: Callable[[list[str]], tuple[int, str]] = lambda argv: (0, "")
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv, *, check=True, **kwargs) -> Result:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        code, output = self.respond(argv)
        return Result(tuple(argv), code, output, 0.0)
