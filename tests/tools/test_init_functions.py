"""The containerd and faasd init scripts' boot-path functions, run on their own in busybox sh
(the shell of Tiny Core): one modprobe for all modules with a fallback that names what is
missing, one read of the mounts for all cgroup controllers, one image list for all images.
Each saves the boot a command per item; these tests keep the behaviour the same."""

from __future__ import annotations

import os
import socket as sockets
import subprocess
from pathlib import Path

import pytest

from appliance.paths import REPO as REPO_ROOT

pytestmark = pytest.mark.tools

INIT_SCRIPTS = {name: REPO_ROOT / "overlays" / name / "root/usr/local/etc/init.d" / name
                for name in ("containerd", "faasd")}


def functions(name: str, *wanted: str) -> str:
    """The text of the init script's functions `wanted`, as the script defines them."""
    text = INIT_SCRIPTS[name].read_text()
    out = []
    for function in wanted:
        start = text.index(f"\n{function}() {{")
        out.append(text[start:text.index("\n}\n", start) + 3])
    return "".join(out)


def sh(program: str, path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["busybox", "sh", "-c", f"set -eu\n{program}"], capture_output=True,
                          text=True, timeout=30,
                          env={"PATH": f"{path}:/usr/bin:/bin", **env})


def fake_modprobe(tmp: Path, missing: str = "", no_all: bool = False) -> str:
    """A modprobe (a shell function: this busybox prefers its own applets to PATH) that logs
    its arguments and "loads" a module by making its folder in tmp/sys; it fails for the
    modules of `missing`, and for -a when `no_all`."""
    return f"""modprobe() {{
    echo "$*" >> {tmp}/calls
    _rc=0
    if [ "$1" = -a ]; then
        [ {int(no_all)} = 1 ] && return 1
        shift
    fi
    for _m in "$@"; do
        case " {missing} " in *" $_m "*) _rc=1; continue ;; esac
        mkdir -p {tmp}/sys/$_m
    done
    return $_rc
}}
"""


def load_modules(tmp: Path, modules: str, loaded: tuple[str, ...] = (),
                 **fake) -> tuple[list[str], str]:
    """The modprobe calls of load_modules, and what it said (stderr)."""
    (tmp / "sys").mkdir()
    for module in loaded:
        (tmp / "sys" / module).mkdir()
    # loud() also writes to /dev/console when it can: here, to stderr only
    program = (functions("containerd", "warn", "log_line", "module_home", "load_modules")
               + fake_modprobe(tmp, **fake)
               + f'loud() {{ warn "$*"; }}\nLOG={tmp}/containerd.log\nload_modules $MODULES\n')
    result = sh(program, tmp, MODULES=modules, SYS_MODULE=str(tmp / "sys"))
    assert result.returncode == 0, result.stderr
    calls = (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []
    return calls, result.stderr


def test_the_modules_not_loaded_yet_load_in_one_modprobe(tmp_path):
    calls, err = load_modules(tmp_path, "overlay bridge veth xt_nat", loaded=("veth",))
    assert calls == ["-a overlay bridge xt_nat"] and err == ""


def test_nothing_is_run_when_every_module_is_loaded(tmp_path):
    calls, err = load_modules(tmp_path, "overlay veth", loaded=("overlay", "veth"))
    assert calls == [] and err == ""


def test_a_missing_module_is_named_with_its_extension_and_the_rest_still_load(tmp_path):
    calls, err = load_modules(tmp_path, "overlay bridge xt_nat", missing="bridge")
    assert calls == ["-a overlay bridge xt_nat", "bridge"]
    assert "kernel modules not available (not loaded, not built in): bridge" in err
    assert "bridge: ships in net-bridging-KERNEL.tcz" in err
    assert (tmp_path / "sys" / "xt_nat").is_dir()


def test_without_modprobe_a_each_module_is_loaded_on_its_own(tmp_path):
    calls, err = load_modules(tmp_path, "overlay bridge", no_all=True)
    assert calls == ["-a overlay bridge", "overlay", "bridge"] and err == ""


PROC_CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t1\t1
cpu\t0\t1\t1
memory\t0\t1\t0
pids\t3\t1\t1
"""


def test_unmounted_controllers_are_the_enabled_ones_without_a_mount(tmp_path):
    (tmp_path / "cgroups").write_text(PROC_CGROUPS)
    (tmp_path / "mounts").write_text(
        "cgroup /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n"
        "proc /proc proc rw 0 0\n")
    program = functions("containerd", "unmounted_controllers") + \
        f"unmounted_controllers {tmp_path}/mounts {tmp_path}/cgroups\n"
    result = sh(program, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cpuset", "cpu"]  # memory is disabled, pids mounted


@pytest.mark.parametrize(("name", "found"), [
    ("ghcr.io/openfaas/gateway:0.27.0", True),
    ("ghcr.io/openfaas/gateway:0.27", False),       # a prefix is not the image
    ("gateway:0.27.0", False),                      # nor a suffix
    ("docker.io/library/nats-streaming:0.25.5", True),
])
def test_an_image_is_listed_only_by_its_whole_name(tmp_path, name, found):
    present = "ghcr.io/openfaas/gateway:0.27.0\ndocker.io/library/nats-streaming:0.25.5"
    program = functions("faasd", "listed") + f'present_list="{present}"\nlisted "{name}"\n'
    assert (sh(program, tmp_path).returncode == 0) is found


# /proc/net/tcp's layout (and tcp6's, with longer addresses): st 0A is LISTEN.
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A
"""


def listening(tmp: Path, port: int, tables: dict[str, str]) -> bool:
    net = tmp / "net"
    net.mkdir(exist_ok=True)
    for name, text in tables.items():
        (net / name).write_text(text)
    program = functions("faasd", "listening") + f"PROC_NET={net}\nlistening {port:04X}\n"
    return sh(program, tmp).returncode == 0


def test_a_port_listens_on_ipv4_or_ipv6_and_a_connection_is_not_listening(tmp_path):
    assert listening(tmp_path, 8081, {"tcp": TCP})  # 0.0.0.0:8081 listens
    assert not listening(tmp_path, 8080, {"tcp": TCP})  # only a connection from 8080
    assert listening(tmp_path, 8080, {"tcp": TCP, "tcp6": TCP6})  # [::]:8080 listens
    assert not listening(tmp_path, 9090, {"tcp": TCP, "tcp6": TCP6})


def test_without_tables_only_the_http_answer_can_tell(tmp_path):
    assert listening(tmp_path, 9090, {})


def imported_as(tmp: Path, output: str, name: str, listed: str) -> tuple[bool, list[str]]:
    """imported_as on ctr import's OUTPUT, with a ctr that logs its calls and lists LISTED."""
    (tmp / "out").write_text(output)
    program = (functions("faasd", "image_present", "imported_as")
               + f'ctr() {{ echo "$*" >> {tmp}/calls; printf "{listed}\\n"; }}\n'
               + f'NAMESPACE=openfaas\nimported_as {tmp}/out "{name}"\n')
    ok = sh(program, tmp).returncode == 0
    calls = (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []
    return ok, calls


IMPORT_OUTPUT = "unpacking docker.io/standin/busybox:1.35.0 (sha256:7b3c)...done\n"


def test_an_import_that_names_the_image_needs_no_second_ctr_run(tmp_path):
    assert imported_as(tmp_path, IMPORT_OUTPUT, "docker.io/standin/busybox:1.35.0",
                       "docker.io/standin/busybox:1.35.0") == (True, [])


def test_an_import_that_does_not_name_it_is_checked_by_listing(tmp_path):
    other = "docker.io/standin/busybox:1.35"  # a prefix of the name in the output
    ok, calls = imported_as(tmp_path, IMPORT_OUTPUT, other, "docker.io/standin/busybox:1.35.0")
    assert (ok, calls) == (False, ["-n openfaas images ls -q"])
    ok, _ = imported_as(tmp_path, "", other, other)
    assert ok



def faasd_start(tmp: Path, import_fails: bool = False) -> tuple[int, list[str]]:
    """faasd's start with its steps replaced by functions that log their calls in order
    (name and first argument)."""
    stubs = "".join(f'{name}() {{ echo "{name} ${{1:-}}" >> {tmp}/calls; }}\n' for name in (
        "require_overlay", "ensure_containerd", "prepare_state", "start_supervised",
        "wait_healthy", "phase", "say"))
    then = "exit 1" if import_fails else "imported=1; present=0"
    program = (stubs + f"import_images() {{ echo import_images >> {tmp}/calls; {then}; }}\n"
               + "clock() { NOW=100; }\nSTART_TIMEOUT=300 FAASD=faasd STATE=s SECRETS=s/x\n"
               + "PROVIDER_DIR=p LOG_PROVIDER=lp LOG_UP=lu PROVIDER_PORT=8081 GATEWAY_PORT=8080\n"
               + "PROVIDER_HEALTH=provider-health GATEWAY_HEALTH=gateway-health\n"
               + functions("faasd", "start") + "start\n")
    rc = sh(program, tmp).returncode
    calls = (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []
    return rc, [call.strip() for call in calls]


def test_the_provider_starts_before_the_images_are_imported_and_is_waited_for_after(tmp_path):
    rc, calls = faasd_start(tmp_path)
    assert rc == 0
    assert calls[:-1] == ["require_overlay", "ensure_containerd", "prepare_state",
                          "start_supervised provider", "import_images", "phase images",
                          "wait_healthy provider-health", "phase provider",
                          "start_supervised up", "wait_healthy gateway-health", "phase gateway"]
    assert calls[-1].startswith("say running:")


def test_a_failed_import_stops_the_start_before_faasd_up(tmp_path):
    rc, calls = faasd_start(tmp_path, import_fails=True)
    assert rc == 1 and calls[-1] == "import_images" and "start_supervised up" not in calls


# `ctr plugins ls` as containerd 1.6 prints it (TYPE ID PLATFORMS STATUS).
PLUGINS = """TYPE                            ID          PLATFORMS      STATUS
io.containerd.snapshotter.v1    native      linux/amd64    ok
io.containerd.snapshotter.v1    overlayfs   linux/amd64    {overlayfs}
"""


def fake_ctr(tmp: Path, plugins: str = PLUGINS.format(overlayfs="ok"), rc: int = 0) -> str:
    """A ctr (a shell function) that logs its arguments and prints `plugins`."""
    (tmp / "plugins").write_text(plugins)
    return f'ctr() {{ echo "$*" >> {tmp}/calls; cat {tmp}/plugins; return {rc}; }}\n'


def calls_of(tmp: Path) -> list[str]:
    return (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []


def overlayfs_ready(tmp: Path, saved: str | None, running_pid: int | None) -> bool:
    """faasd's overlayfs_ready with containerd's saved plugin list `saved` (None: none) and
    its pid file naming `running_pid`; ctr (the fallback) says overlayfs is ok."""
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    if saved is not None:
        (run / "containerd.plugins").write_text(saved)
    if running_pid is not None:
        (run / "containerd.pid").write_text(f"{running_pid}\n")
    program = (fake_ctr(tmp) + f"CONTAINERD_PLUGINS={run}/containerd.plugins\n"
               + f"CONTAINERD_PIDFILE={run}/containerd.pid\n"
               + functions("faasd", "plugin_list", "overlayfs_ready") + "overlayfs_ready\n")
    return sh(program, tmp).returncode == 0


def test_the_overlayfs_check_reads_the_list_saved_by_the_containerd_that_runs(tmp_path):
    me = os.getpid()  # a process that runs, named in the pid file
    assert overlayfs_ready(tmp_path, f"pid {me}\n" + PLUGINS.format(overlayfs="ok"), me)
    assert calls_of(tmp_path) == []  # no ctr run
    assert not overlayfs_ready(tmp_path, f"pid {me}\n" + PLUGINS.format(overlayfs="skip"), me)
    assert calls_of(tmp_path) == []


@pytest.mark.parametrize("case", ["none saved", "another containerd", "gone"])
def test_without_a_list_of_the_containerd_that_runs_ctr_is_asked(tmp_path, case):
    me = os.getpid()
    gone = max(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()) + 100000
    saved, running = {"none saved": (None, me),
                      "another containerd": (f"pid {me}\n" + PLUGINS.format(overlayfs="skip"),
                                             me + 1),
                      "gone": (f"pid {gone}\n" + PLUGINS.format(overlayfs="skip"), gone)}[case]
    assert overlayfs_ready(tmp_path, saved, running)  # ctr's answer: ok
    assert calls_of(tmp_path) == ["plugins ls"]


def plugins_answer(tmp: Path, socket: bool, rc: int = 0) -> tuple[bool, str | None]:
    """containerd's plugins_answer for pid 4242: its status and the file it leaves."""
    sock = tmp / "containerd.sock"
    if socket:
        server = sockets.socket(sockets.AF_UNIX)
        server.bind(str(sock))
    saved = tmp / "containerd.plugins"
    saved.write_text("pid 1\nan earlier list\n")
    program = (fake_ctr(tmp, rc=rc) + f"SOCKET={sock}\nPLUGINS_FILE={saved}\n"
               + functions("containerd", "plugins_answer") + "plugins_answer 4242\n")
    ok = sh(program, tmp).returncode == 0
    return ok, saved.read_text() if saved.exists() else None


def test_containerd_saves_its_first_answer_with_its_pid(tmp_path):
    ok, saved = plugins_answer(tmp_path, socket=True)
    assert ok and saved == "pid 4242\n" + PLUGINS.format(overlayfs="ok")
    assert calls_of(tmp_path) == [f"--address {tmp_path}/containerd.sock --timeout 5s plugins ls"]


def test_no_answer_leaves_no_list(tmp_path):
    assert plugins_answer(tmp_path, socket=True, rc=1) == (False, None)


def test_without_a_socket_ctr_is_not_run(tmp_path):
    # the list is left as it is: start removes an earlier containerd's before it launches
    assert plugins_answer(tmp_path, socket=False) == (False, "pid 1\nan earlier list\n")
    assert calls_of(tmp_path) == []



def test_overlay_loads_before_containerd_and_the_rest_while_it_starts(tmp_path):
    """containerd's start with its steps logged in order; each load_modules says whether
    containerd was launched by then (its pid file, written right after the launch)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "containerd").write_text("#!/bin/sh\nexit 0\n")  # exec'd: not a function
    (bin_dir / "containerd").chmod(0o755)
    pidfile = tmp_path / "containerd.pid"
    stubs = "".join(f'{name}() {{ echo "{name} $*" >> {tmp_path}/calls; }}\n' for name in (
        "mount_cgroups", "phase", "enable_forwarding", "check_places", "repair_uuid",
        "rotate_log", "log_line", "say"))
    program = (stubs + "answers() { return 1; }\npid_of() { :; }\n"
               + "choose_snapshotter() { SNAPSHOTTER=overlayfs; }\n"
               + f"load_modules() {{ [ -s {pidfile} ] && l=launched || l=not-launched\n"
               + f'  echo "load_modules $* ($l)" >> {tmp_path}/calls; }}\n'
               + f'wait_until_up() {{ wait "$1"; echo wait_until_up >> {tmp_path}/calls; }}\n'
               + f"ROOT={tmp_path}/root SOCKET={tmp_path}/sock LOG={tmp_path}/c.log\n"
               + f"PIDFILE={pidfile} SNAPSHOTTER_FILE={tmp_path}/snap PLUGINS_FILE={tmp_path}/p\n"
               + f"CONFIG=c.toml\nmkdir() {{ command mkdir -p {tmp_path}/made; }}\n"
               + functions("containerd", "split_modules", "prepare_network", "start")
               + "split_modules bridge overlay xt_nat\nstart\n")
    result = sh(program, bin_dir)
    assert result.returncode == 0, result.stderr
    calls = [c.strip() for c in calls_of(tmp_path) if not c.startswith(("say", "log_line"))]
    assert calls == ["mount_cgroups", "phase cgroups", "load_modules overlay (not-launched)",
                     "check_places", "repair_uuid", "rotate_log",
                     "load_modules bridge xt_nat (launched)", "enable_forwarding",
                     "wait_until_up"]
