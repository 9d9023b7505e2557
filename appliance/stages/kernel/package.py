"""The kernel stage's products: module extensions Tiny Core style, and modules.json.

A module extension `<name>-<kver>.tcz` carries `usr/local/lib/modules/<kver>/kernel/<path>.ko`,
which tce-load links into / and indexes with depmod (tc11's initrd links
lib/modules/<kver>/kernel.tclocal to that folder). The modules we build are plain .ko
(MODULE_COMPRESS is off); tc11's own module extensions carry gzipped ones (.ko.gz:
tinycorelinux/sorter sorter.sh @ bf13d13 takes a gzipped modules_install tree), and a
rewritten extension keeps each module compressed as it was. modules.json
lists every extension built, for the extensions stage: `kernel_name` is the `-KERNEL` name
the .dep files use, `replaces` the fetch output a rebuilt extension stands in for.
A full rebuild also yields vmlinuz64 and the whole module tree (modules-<kver>.tgz), for
the remaster stage: the ISO's base initramfs modules must match the new kernel too.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import log
from appliance.errors import StageError
from appliance.run import Runner
from appliance.stages.kernel import check as kernel
from appliance.tinycore import tcz

if TYPE_CHECKING:
    from appliance.stages.kernel.stage import ModuleSpec, Steps

MODULE_ROOT = "usr/local/lib/modules"
INFO = {"Author": "Linux kernel developers", "Original-site": "https://www.kernel.org/",
        "Copying-policy": "GPLv2"}


GZ = ".gz"  # the one module compression tc11 uses (modprobe, busybox's too, reads it)


def module_name(path: str) -> str:
    """fs/overlayfs/overlay.ko(.gz) -> overlay (modprobe's spelling: - becomes _)."""
    return path.rsplit("/", 1)[-1].removesuffix(GZ).removesuffix(".ko").replace("-", "_")


def plain(rel: str) -> str:
    """net/bridge/bridge.ko.gz -> net/bridge/bridge.ko: the file a kernel build makes."""
    return rel.removesuffix(GZ)


def kernel_name(filename: str, kver: str) -> str:
    """overlay-6.1.192-tinycore64.tcz -> overlay-KERNEL.tcz, as .dep files name it."""
    return re.sub(rf"-{re.escape(kver)}\.tcz$", "-KERNEL.tcz", filename)


def inside_path(kver: str, rel: str) -> str:
    """Where a module lies in its extension: rel is its path below kernel/."""
    return f"{MODULE_ROOT}/{kver}/kernel/{rel}"


def check_vermagic(output: str, want: str, what: str) -> str:
    """`modinfo -F vermagic`: its first word must be the target release, exactly."""
    magic = next((line.strip() for line in output.splitlines() if line.strip()), "")
    if magic.split()[:1] != [want]:
        raise StageError(f"kernel: {what}: vermagic {magic!r} is not for release {want!r}; "
                         "the kernel would refuse to load it")
    return magic


def modinfo_argv(ko: Path) -> list[str]:
    return ["modinfo", "-F", "vermagic", str(ko)]


def unsquashfs_argv(extension: Path, dest: Path) -> list[str]:
    return ["unsquashfs", "-no-progress", "-no-xattrs", "-d", str(dest), str(extension)]


def place(ko: Path, tree: Path, inside: str) -> None:
    """Copy a module into an extension tree, gzipped when `inside` ends in .gz; folders 755
    and files 644 whatever the umask."""
    dest = tree / inside
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inside.endswith(GZ):
        # mtime 0 and no file name, as `gzip -n`: the same module gives the same bytes
        dest.write_bytes(gzip.compress(ko.read_bytes(), compresslevel=9, mtime=0))
    else:
        shutil.copyfile(ko, dest)
    dest.chmod(0o644)
    for folder in dest.relative_to(tree).parents:  # down to "." (the tree itself)
        (tree / folder).chmod(0o755)


def modules_in(tree: Path, kver: str, name: str) -> list[str]:
    """The modules an extension carries, as paths below lib/modules/<kver>/kernel/."""
    base = tree / MODULE_ROOT / kver / "kernel"
    other = sorted(p.name for p in tree.rglob("*.ko.*") if not p.name.endswith(".ko.gz"))
    if other:
        raise StageError(f"kernel: {name} carries modules compressed other than with gzip "
                         f"({other[0]}, ...): only .ko and .ko.gz are rewritten, as tc11 "
                         "ships them")
    found = sorted([*tree.rglob("*.ko"), *tree.rglob("*.ko.gz")])
    stray = [p for p in found if not p.is_relative_to(base)]
    if stray:
        raise StageError(f"kernel: {name}: {stray[0].relative_to(tree)} is not below "
                         f"{MODULE_ROOT}/{kver}/kernel/")
    return [p.relative_to(base).as_posix() for p in found]


def write_modules_tarball(modroot: Path, out: Path, source_date_epoch: int) -> Path:
    """lib/modules/<kver>/... as a .tgz whose bytes depend only on the files."""
    with open(out, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted((modroot / "lib").rglob("*")):
            info = tar.gettarinfo(str(path), path.relative_to(modroot).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = (
                source_date_epoch, 0, 0, "", "")
            if info.isfile():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return out


class Packager:
    """Builds the extensions into the stage's work folder and records them for modules.json."""

    def __init__(self, runner: Runner, steps: Steps, work: Path, kver: str,
                 source_date_epoch: int, built_from: str):
        self.runner, self.steps, self.work, self.kver = runner, steps, work, kver
        self.epoch, self.built_from = source_date_epoch, built_from
        self.entries: list[dict] = []
        self.outputs: dict[str, Path] = {}

    def check(self, ko: Path, what: str) -> None:
        if not ko.is_file():
            raise StageError(f"kernel: the build did not produce {what}",
                             "check its dir and files in kernel/modules.toml for this kernel")
        result = self.steps.run(f"modinfo {what}", modinfo_argv(ko))
        check_vermagic(result.output, self.kver, what)

    def extension(self, tree: Path, filename: str, description: str, files: list[str],
                  deps: list[str], replaces: str | None) -> None:
        """NAME.tcz (+ .md5.txt, .info, .list, .dep) from tree, recorded for modules.json."""
        comments = (f"Built by tc-appliance's kernel stage from {self.built_from}. Modules: "
                    + " ".join(sorted({module_name(f) for f in files})))
        info = {**INFO, "Description": description, "Version": self.kver,
                "Comments": textwrap.fill(comments, 60)}
        path = tcz.build_tcz(tree, self.work, filename, deps, info, self.runner, self.epoch,
                             log="kernel")
        for suffix in ("", ".md5.txt", ".info", ".list", ".dep"):
            if (self.work / f"{path.name}{suffix}").exists():
                self.outputs[f"{path.name}{suffix}"] = self.work / f"{path.name}{suffix}"
        self.entries.append({
            "name": path.name, "kernel_name": kernel_name(path.name, self.kver),
            "modules": sorted({module_name(f) for f in files}), "files": sorted(files),
            "deps": list(deps), "replaces": replaces})
        log.detail(f"kernel: packaged {path.name} ({len(files)} modules)")

    def module_extension(self, base: Path, spec: ModuleSpec) -> None:
        """<module>-<kver>.tcz; base holds the .ko files at their tree paths."""
        tree = self.work / "trees" / f"{spec.name}-{self.kver}"
        files = []
        for rel in spec.sources:
            self.check(base / rel, rel)
            files.append(inside_path(self.kver, rel))
            place(base / rel, tree, files[-1])
        self.extension(tree, f"{spec.name}-{self.kver}", spec.description, files, [], None)

    def modules_only(self, src: Path, specs: list[ModuleSpec]) -> dict[str, Path]:
        for spec in specs:
            self.module_extension(src, spec)
        return self.outputs

    def replace_extension(self, key: str, fetched: Path, moddir: Path, deps: list[str]) -> None:
        """A fetched module extension with every .ko swapped for the rebuilt kernel's."""
        name = key.removeprefix("tcz/")
        tree = self.work / "trees" / name.removesuffix(".tcz")
        tree.parent.mkdir(parents=True, exist_ok=True)
        self.steps.run(f"unsquashfs {name}", unsquashfs_argv(fetched, tree))
        rels = modules_in(tree, self.kver, name)
        if not rels:
            return  # no modules: nothing in it depends on the kernel build
        for rel in rels:
            built = moddir / "kernel" / plain(rel)
            if not built.is_file():
                raise StageError(f"kernel: {name} carries {rel}, which the rebuilt kernel "
                                 "did not build", "the rebuilt config must keep every module "
                                 "of the extensions it replaces")
            self.check(built, plain(rel))
            place(built, tree, inside_path(self.kver, rel))
        description = f"{name.removesuffix('.tcz')} rebuilt for the rebuilt kernel"
        self.extension(tree, name.removesuffix(".tcz"), description,
                       [inside_path(self.kver, r) for r in rels],
                       [kernel_name(d, self.kver) for d in deps], key)

    def full_rebuild(self, src: Path, moddir: Path, specs: list[ModuleSpec],
                     fetched: dict[str, Path], deps: dict[str, list[str]]) -> dict[str, Path]:
        """vmlinuz64, the module tree, our modules, and every fetched -KERNEL extension."""
        for spec in specs:
            self.module_extension(moddir / "kernel", spec)
        for key, path in sorted(fetched.items()):
            if key.startswith("tcz/") and key.endswith(f"-{self.kver}.tcz"):
                self.replace_extension(key, path, moddir, deps.get(key.removeprefix("tcz/"), []))
        shutil.copyfile(src / "arch" / "x86" / "boot" / "bzImage", self.work / "vmlinuz64")
        tarball = self.work / f"modules-{self.kver}.tgz"
        write_modules_tarball(moddir.parents[2], tarball, self.epoch)  # modroot/lib/modules/kver
        self.outputs.update({"vmlinuz64": self.work / "vmlinuz64", tarball.name: tarball})
        return self.outputs

    def finish(self, src: Path, full: bool, source_name: str, config_name: str
               ) -> dict[str, Path]:
        """The final .config (judged by kernel-check) and modules.json."""
        final = self.work / f"config-{self.kver}"
        shutil.copyfile(src / ".config", final)
        judged = judge(final, full)
        listing = {
            "kernel_release": self.kver, "rebuild": "full" if full else "none",
            "source": source_name, "config": config_name, "final_config": final.name,
            "extensions": self.entries,
            "kernel": {"vmlinuz64": "vmlinuz64", "modules": f"modules-{self.kver}.tgz"}
            if full else None,
            "kernel_check": judged,
        }
        out = self.work / "modules.json"
        out.write_text(json.dumps(listing, indent=2) + "\n", encoding="utf-8")
        return {final.name: final, "modules.json": out}


def judge(config: Path, full: bool) -> dict[str, list[str]]:
    """kernel-check of the built config: a full rebuild must meet every option it lists."""
    verdicts = kernel.judge(kernel.read_config(config.read_text(encoding="utf-8"),
                                               config.name), kernel.load_options())
    missing = {level: [v.name for v in verdicts if v.level == level and not v.ok]
               for level in ("required", "recommended")}
    unmet = missing["required"] + (missing["recommended"] if full else [])
    if full and unmet:
        raise StageError(f"kernel: the rebuilt kernel's config misses {', '.join(unmet)}",
                         "turn them on in kernel/containers.config")
    if unmet:
        log.warn(f"kernel: the built config still misses required option(s) "
                 f"{', '.join(unmet)} (`pipeline.py kernel-check {config}`)")
    return {f"{level}_missing": names for level, names in missing.items()}
