"""SSH into a test VM as tc through QEMU's user-mode forward of 127.0.0.1:<port> to port 22.

The appliance starts sshd beside its services, and at a machine's first boot only after
their marker (bootsync.sh's ssh_job: host keys are made then, which takes seconds to tens of
seconds under TCG), so a service marker on the serial console does not mean that sshd
listens yet. Until it does, QEMU's forward accepts
the connection and then drops it: ssh exits 255 with "kex_exchange_identification" or
"Connection reset". Such an attempt never reached the guest's shell, so it is made again
until `connect_within` seconds have passed; any other result is returned as it is.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

GUEST_PATH = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; "
CONNECT_WITHIN_S = 300
RETRY_EVERY_S = 2
# ssh's own messages for a connection that ended before authentication
NOT_LISTENING = re.compile(r"kex_exchange_identification|Connection (?:reset|refused|closed by"
                           r"|timed out)")


def ssh_argv(key: Path | None, port: int, command: str, *extra: str) -> list[str]:
    identity = ["-i", str(key)] if key else []
    return ["ssh", *identity, "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=30", *extra, "tc@127.0.0.1", command]


def not_listening(result: subprocess.CompletedProcess) -> bool:
    """True when ssh gave up before the guest's sshd took the connection."""
    return result.returncode == 255 and bool(NOT_LISTENING.search(result.stderr))


def ssh(key: Path | None, port: int, command: str, *extra: str, timeout: float = 120,
        connect_within: float = CONNECT_WITHIN_S) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + connect_within
    while True:
        result = subprocess.run(ssh_argv(key, port, command, *extra), capture_output=True,
                                text=True, timeout=timeout)
        if not not_listening(result) or time.monotonic() >= deadline:
            return result
        time.sleep(RETRY_EVERY_S)  # the interval between two attempts, not a wait for success
