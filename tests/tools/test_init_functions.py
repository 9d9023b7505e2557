"""The containerd and faasd init scripts' boot-path functions, run on their own in busybox sh
(the shell of Tiny Core): one modprobe for all modules with a fallback that names what is
missing, one read of the mounts for all cgroup controllers, one image list for all images.
Each saves the boot a command per item; these tests keep the behaviour the same."""

from __future__ import annotations

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
               + f'loud() {{ warn "$*"; }}\nLOG={tmp}/containerd.log\nload_modules\n')
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
