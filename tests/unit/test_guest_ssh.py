"""The VM tests' SSH helper tries again only while nothing listens behind the forward.

QEMU's user-mode forward accepts on the host and drops the connection while the guest's sshd
is not up yet; a local socket that accepts and closes at once does the same, so these tests
run the real ssh client against it.
"""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from tests.vm import guest_ssh


class DroppingForward:
    """Accepts on 127.0.0.1 and closes every connection at once, as slirp does with no sshd."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def forward():
    dropping = DroppingForward()
    yield dropping
    dropping.close()


def test_a_dropped_connection_counts_as_not_listening_and_is_tried_again(forward):
    result = guest_ssh.ssh(None, forward.port, "true", timeout=30, connect_within=3)
    assert result.returncode == 255 and guest_ssh.not_listening(result), result.stderr
    assert forward.accepted >= 2  # tried again within connect_within, then gave the last result


def test_without_time_left_one_attempt_is_made(forward):
    result = guest_ssh.ssh(None, forward.port, "true", timeout=30, connect_within=0)
    assert guest_ssh.not_listening(result)
    assert forward.accepted == 1


def test_an_answer_from_the_guest_is_never_taken_for_not_listening():
    denied = subprocess.CompletedProcess([], 255, "", "tc@127.0.0.1: Permission denied (publickey).\n")
    failed = subprocess.CompletedProcess([], 1, "", "Connection reset by peer\n")  # the command's
    assert not guest_ssh.not_listening(denied)
    assert not guest_ssh.not_listening(failed)
