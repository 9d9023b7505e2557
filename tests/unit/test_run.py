"""The runner: logging, failures with tail and log path, process-group kills."""

import os
import signal
import time
from pathlib import Path

import pytest

from appliance import log, signals
from appliance.errors import ToolError
from appliance.run import Runner, format_argv, install_hint


def quiet_runner(tmp_path) -> Runner:
    return Runner(log_dir=tmp_path / "logs", echo=lambda line: None)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def alive(pid: int) -> bool:
    """Signals are delivered asynchronously: give the kernel a moment to finish the kill."""
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running(pid)


def test_success_is_logged_with_the_command(tmp_path):
    result = quiet_runner(tmp_path).run(["sh", "-c", "echo hello; echo err >&2"], log="stage")
    assert result.returncode == 0
    assert result.output.splitlines() == ["hello", "err"]
    log = (tmp_path / "logs" / "stage.log").read_text()
    assert log.splitlines() == ["+ sh -c 'echo hello; echo err >&2'", "hello", "err"]


def test_streaming_echoes_command_and_lines(tmp_path):
    seen = []
    Runner(echo=seen.append).run(["sh", "-c", "echo a; echo b"], stream=True)
    assert seen == ["+ sh -c 'echo a; echo b'", "a", "b"]


def test_failure_names_tool_exit_code_tail_and_log(tmp_path):
    script = "for i in $(seq 1 50); do echo line$i; done; exit 3"
    with pytest.raises(ToolError) as info:
        quiet_runner(tmp_path).run(["sh", "-c", script], log="build")
    msg = info.value.message
    assert msg.startswith("sh failed with exit code 3: sh -c ")
    assert "line50" in msg and "line21" in msg and "line20\n" not in msg  # last 30 lines only
    assert f"full log: {tmp_path / 'logs' / 'build.log'}" in msg


def test_check_false_returns_the_code(tmp_path):
    assert quiet_runner(tmp_path).run(["false"], check=False).returncode == 1


def test_missing_tool_names_the_debian_package():
    with pytest.raises(ToolError) as info:
        Runner().run(["mksquashfs-does-not-exist"])
    assert "required tool 'mksquashfs-does-not-exist' not found" in str(info.value)
    assert install_hint("/usr/bin/mksquashfs") == (
        "install it with `apt-get install squashfs-tools` (or run `make deps`)")
    assert "qemu-system-x86" in install_hint("qemu-system-x86_64")


def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = []
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        quiet_runner(tmp_path).run(["sh", "-c", "sleep 300 & echo $!; wait"], timeout=1,
                                   on_line=lambda line: pids.append(int(line)))
    assert time.monotonic() - start < 20
    assert "sh timed out after 1 s and was stopped" in info.value.message
    assert pids and not alive(pids[0])


def test_interrupt_kills_the_children(tmp_path):
    pids = []

    def on_line(line):
        pids.append(int(line))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet_runner(tmp_path).run(["sh", "-c", "sleep 300 & echo $!; wait"], on_line=on_line)
    assert pids and not alive(pids[0])


def test_stdin_is_fed(tmp_path):
    assert quiet_runner(tmp_path).run(["cat"], stdin="abc\n").output == "abc"


def test_env_and_cwd(tmp_path):
    result = quiet_runner(tmp_path).run(["sh", "-c", 'echo "$X $(pwd)"'], env={"X": "1"},
                                        cwd=tmp_path)
    assert result.output == f"1 {tmp_path}"


def test_format_argv_quotes():
    assert format_argv(["a b", "c", os.fspath(Path("/x y"))]) == "'a b' c '/x y'"


def test_background_start_logs_and_stop_kills_the_group(tmp_path):
    runner = quiet_runner(tmp_path)
    # The pid goes in by rename: a plain `> child` is seen to exist before it is written.
    script = "echo up; sleep 300 & echo $! > child.tmp && mv child.tmp child; wait"
    with runner.start(["sh", "-c", script], cwd=tmp_path, log="server") as proc:
        deadline = time.monotonic() + 10
        while not (tmp_path / "child").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int((tmp_path / "child").read_text())
        assert proc.running() and running(child)
    assert not proc.running() and not alive(child)
    log = (tmp_path / "logs" / "server.log").read_text()
    assert log.startswith("+ sh -c ") and "up\n" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_kill_the_children_as_ctrl_c_does(tmp_path, sig):
    """Without the handler Python dies on the spot and the child's own session survives."""
    pids = []

    def on_line(line):
        pids.append(int(line))
        os.kill(os.getpid(), sig)  # CI's timeout, `timeout make image`, a closed terminal

    with signals.terminate_as_interrupt(), pytest.raises(KeyboardInterrupt) as info:
        quiet_runner(tmp_path).run(["sh", "-c", "sleep 300 & echo $!; wait"], on_line=on_line)
        time.sleep(5)  # not reached: the handler raises while the runner reads
    assert signals.exit_status(info.value) == 128 + sig
    assert signals.describe(info.value) == f"stopped by {signal.Signals(sig).name}"
    assert pids and not alive(pids[0])
    assert signal.getsignal(sig) is not signals._raise_once  # restored afterwards


def test_the_command_echo_goes_to_stderr_and_not_under_quiet(tmp_path, capsys):
    Runner().run(["sh", "-c", "echo out"], stream=True)
    out, err = capsys.readouterr()
    assert out == "" and err == "+ sh -c 'echo out'\nout\n"  # stdout: JSON and tables only
    log.set_quiet(True)
    try:
        Runner().run(["sh", "-c", "echo out"], stream=True)
    finally:
        log.set_quiet(False)
    assert capsys.readouterr() == ("", "")
