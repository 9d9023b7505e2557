"""One `make demo` build per install mode for the whole vm tier (tests/vm/conftest.py).

A demo build takes minutes under TCG; every vm test that only reads a build or boots its
deliverables shares it, so the build runs once per mode per session, not once per module.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from appliance.paths import REPO

DEMO_TIMEOUT_S = 3600


class Demo:
    def __init__(self, root: Path, mode: str):
        self.root, self.mode = root, mode
        self.build, self.out = root / "build", root / "out"
        self.env = {**os.environ, "APPLIANCE_BUILD": str(self.build),
                    "APPLIANCE_OUT": str(self.out)}
        self.log = root / "demo.log"

    def run(self) -> subprocess.CompletedProcess:
        with open(self.log, "w") as log:
            return subprocess.run(["make", "demo", f"INSTALL_MODE={self.mode}"], cwd=REPO,
                                  env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=DEMO_TIMEOUT_S)

    def output(self) -> str:
        return self.log.read_text()

    def qcow2(self) -> Path:
        return next((self.build / "packer").glob("*.qcow2"))


def run_demo(tmp_path_factory, mode: str) -> Demo:
    demo = Demo(tmp_path_factory.mktemp(f"demo-{mode}"), mode)
    result = demo.run()
    assert result.returncode == 0, demo.output()[-6000:]
    return demo
