"""Packer's files for the packer stage, rendered from packer/*.j2 (docs/architecture.md#packer).

`values()` turns the recipe and the earlier stages' outputs into the var-file's values (pure);
`render()` writes appliance.pkr.hcl, appliance.pkrvars.hcl, plugins.pkr.hcl (Packer >= 1.7
only) and the scripts into the work directory, and parses every file back with
python-hcl2 so that a template mistake is reported with its file and line before Packer runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import hcl2
import jinja2
from lark.exceptions import LarkError

from appliance.config import Recipe
from appliance.errors import StageError
from appliance.stages.packer import hcl
from appliance.stages.remaster import stage as iso_remaster
from appliance.vm import qemu

TEMPLATE = "appliance.pkr.hcl"
VAR_FILE = "appliance.pkrvars.hcl"
PLUGINS = "plugins.pkr.hcl"
SCRIPTS = ("install-to-disk.sh", "verify.sh", "cleanup.sh")
SCRIPTS_DIR = "scripts"
OUTPUT_DIR = "output"
PLUGIN_SOURCE = "github.com/hashicorp/qemu"
PLUGIN_VERSION = "~> 1.1"
# Packer uploads each script to /tmp and runs it as root; {{ .Vars }} are its environment.
EXECUTE = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
SSH_TIMEOUT = {"tcg": "30m", "kvm": "10m"}  # TCG: boots and SSH are 5-10x slower
# The initrds an installed system loads; build.gz (the build key) stays on the live ISO.
DISK_INITRDS = tuple(i for i in iso_remaster.INITRDS if not i.endswith("/build.gz"))


@dataclass(frozen=True)
class Build:
    """What the packer stage knows besides the recipe."""

    iso: Path
    iso_sha256: str
    accelerator: str  # "kvm" or "tcg"
    private_key: Path
    extensions: tuple[str, ...]  # load order, "name.tcz"
    work: Path
    serial_log: Path


def vm_name(recipe: Recipe) -> str:
    return f"{recipe.name}-{recipe.version}.qcow2"


def install_env(recipe: Recipe, build: Build) -> list[str]:
    return [
        f"APPLIANCE_MODE={recipe.install.mode}",
        f"APPLIANCE_EXTENSIONS={' '.join(build.extensions)}",
        f"APPLIANCE_INSTALL_ONLY={' '.join(recipe.live.install_only_files)}",
        f"APPLIANCE_BOOT_CODES={' '.join(recipe.disk_boot_codes())}",
        f"APPLIANCE_KERNEL={iso_remaster.KERNEL}",
        f"APPLIANCE_INITRDS={' '.join(DISK_INITRDS)}",
        f"APPLIANCE_DISKROOT={iso_remaster.DISKROOT}",
        "APPLIANCE_DISK=/dev/sda",
    ]


def verify_env(recipe: Recipe) -> list[str]:
    return [
        f"APPLIANCE_MODE={recipe.install.mode}",
        f"APPLIANCE_READY_TIMEOUT={recipe.ready_timeout}",
        f"APPLIANCE_SERVICES={' '.join(recipe.services)}",
    ]


def values(recipe: Recipe, build: Build) -> dict[str, object]:
    """The var-file's values, in the order the template declares them."""
    step = f"{max(30, recipe.ready_timeout // 60 + 20)}m"
    return {
        "iso_url": build.iso.resolve().as_uri(),
        "iso_checksum": f"sha256:{build.iso_sha256}",
        "accelerator": build.accelerator,
        "qemu_accel": qemu.accel_option(build.accelerator),
        "cpus": recipe.vm.cpus,
        "memory": recipe.vm.memory_mb,
        "disk_size": f"{recipe.vm.disk_size_mb}M",
        # Relative to the template's folder (${path.root} in the template): the engine renames
        # build/packer.tmp/ to build/packer/, and the kept files must still run there.
        "output_directory": OUTPUT_DIR,
        "vm_name": vm_name(recipe),
        "serial_log": str(build.serial_log),
        "boot_wait": "3s",
        "boot_command": ["<enter>"],
        "ssh_private_key_file": str(build.private_key),
        "ssh_timeout": SSH_TIMEOUT.get(build.accelerator, "30m"),
        "shutdown_timeout": "5m",
        "step_timeout": step,
        "execute_command": EXECUTE,
        "install_script": f"{SCRIPTS_DIR}/install-to-disk.sh",
        "verify_script": f"{SCRIPTS_DIR}/verify.sh",
        "cleanup_script": f"{SCRIPTS_DIR}/cleanup.sh",
        "install_env": install_env(recipe, build),
        "verify_env": verify_env(recipe),
    }


def needs_plugins_file(packer_version: tuple[int, ...]) -> bool:
    """Packer 1.6 rejects required_plugins; >= 1.7 needs it (and `packer init`)."""
    return packer_version >= (1, 7)


def environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["hcl"] = hcl.literal
    return env


def render_texts(templates: Path, vals: dict[str, object],
                 packer_version: tuple[int, ...]) -> dict[str, str]:
    """File name -> text of every Packer file (pure: nothing is written)."""
    env = environment(templates)
    variables = [(name, hcl.hcl_type(value)) for name, value in vals.items()]
    version = ".".join(map(str, packer_version))
    try:
        texts = {
            TEMPLATE: env.get_template(TEMPLATE + ".j2").render(variables=variables,
                                                                var_file=VAR_FILE),
            VAR_FILE: env.get_template(VAR_FILE + ".j2").render(values=vals),
        }
        if needs_plugins_file(packer_version):
            texts[PLUGINS] = env.get_template(PLUGINS + ".j2").render(
                packer_version=version, plugin_source=PLUGIN_SOURCE,
                plugin_version=PLUGIN_VERSION)
    except jinja2.TemplateError as exc:
        where = f"{exc.filename}:{exc.lineno}" if getattr(exc, "lineno", None) else "packer/"
        raise StageError(f"{where}: {exc}", "fix the template in packer/") from None
    return texts


def parse(name: str, text: str) -> dict:
    """python-hcl2's reading of a rendered file; an error names the file and line."""
    try:
        return hcl2.loads(text)
    except (LarkError, ValueError) as exc:
        line = getattr(exc, "line", None)
        where = f"{name}:{line}" if line else name
        raise StageError(f"{where}: the rendered Packer file does not parse: "
                         f"{str(exc).splitlines()[0]}",
                         f"fix packer/{name}.j2 (rendered copy kept in the work directory)"
                         ) from None


def render(templates: Path, work: Path, vals: dict[str, object],
           packer_version: tuple[int, ...]) -> dict[str, Path]:
    """Write and check Packer's files and the scripts in `work`; name -> path."""
    texts = render_texts(templates, vals, packer_version)
    written = {}
    for name, text in texts.items():
        path = work / name
        path.write_text(text)
        written[name] = path
    for name, text in texts.items():
        parse(name, text)
    scripts = work / SCRIPTS_DIR
    scripts.mkdir(exist_ok=True)
    for script in SCRIPTS:
        target = scripts / script
        shutil.copyfile(templates / "scripts" / script, target)
        target.chmod(0o755)
    return written
