"""Test doubles for the pipeline's own seams (never for the product): a recording runner."""

from __future__ import annotations

import struct
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


def fake_vmdk(cid: str, data: bytes) -> bytes:
    """The start of a sparse VMDK as qemu-img writes it: a KDMV header whose descriptor
    (sector 1, one sector long) carries `cid`, then `data`."""
    header = bytearray(512)
    header[:4] = b"KDMV"
    struct.pack_into("<QQ", header, 28, 1, 1)
    text = b"# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=ffffffff\n" % cid.encode()
    return bytes(header) + text + bytes(512 - len(text)) + data
