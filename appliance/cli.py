"""Command line: `python pipeline.py <verb>`; user mistakes end in a message, not a traceback."""

from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path
from urllib.parse import urlsplit

from appliance import config, doctor, log, paths, signals
from appliance import lock as lockfile
from appliance.context import Context, select_lock
from appliance.errors import PipelineError, UsageError
from appliance.fetch import Fetcher
from appliance.paths import REPO, build_root, cache_root, out_root
from appliance.run import Runner
from appliance.stages.kernel import check as kernel
from appliance.stages.order import STAGE_NAMES, stage_runner
from appliance.vm import boot_check, qemu
from appliance.vm import image_boot as test_image


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", type=Path, metavar="TOML",
                   help="recipe file; repeat to overlay (later files win); "
                        "default: appliance.toml")
    p.add_argument("--lock", type=Path, metavar="PATH",
                   help="lock file (default: appliance.lock beside the first recipe)")


def positive_int(text: str) -> int:
    """argparse type for counts: a clear usage error for 0, -1 or 'x' (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_build_args(p: argparse.ArgumentParser, *, until: bool = True) -> None:
    add_recipe_args(p)
    p.add_argument("--locked", action="store_true",
                   help="refuse any input that is not pinned in the lock or does not match it")
    p.add_argument("--offline", action="store_true",
                   help="use the download cache only; name any input that is missing")
    p.add_argument("--force", action="append", default=[], choices=STAGE_NAMES,
                   metavar="STAGE", help="rebuild STAGE even if it is up to date (repeatable)")
    p.add_argument("-j", "--jobs", type=positive_int, default=4,
                   help="parallel downloads (default 4)")
    if until:
        p.add_argument("--until", choices=STAGE_NAMES, metavar="STAGE",
                       help=f"stop after STAGE ({', '.join(STAGE_NAMES)})")


def add_reprobe_arg(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--reprobe", action="store_true",
                   help="probe KVM/TCG again instead of using the verdict cached under the "
                        "cache folder (it is keyed by the host kernel, QEMU and /dev/kvm)")
    return p


def add_test_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="*", type=Path, metavar="IMAGE",
                   help=".qcow2, .vmdk or .ova (default: the deliverables in out/)")
    p.add_argument("--memory", type=int, default=test_image.DEFAULT_MEMORY_MB, metavar="MB",
                   help=f"guest memory (default {test_image.DEFAULT_MEMORY_MB})")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds from QEMU start to APPLIANCE-READY, per boot "
                        f"(default {test_image.TIMEOUT_S['tcg']:g} under TCG, "
                        f"{test_image.TIMEOUT_S['kvm']:g} under KVM)")
    p.add_argument("--disk-bus", action="append", default=[], choices=boot_check.DISK_BUSES,
                   help="attach the disk on this bus (repeatable; default ide)")
    p.add_argument("--nic", action="append", default=[], choices=list(boot_check.NICS),
                   help="network card (repeatable; default e1000); every bus is booted with "
                        "every NIC")
    p.add_argument("--boots", type=int, default=test_image.BOOTS, metavar="N",
                   help=f"boots per image and variant, each after an ACPI power-off "
                        f"(default {test_image.BOOTS}: the second boot is where installs break)")
    p.add_argument("--matrix", action="store_true",
                   help="every disk bus with every NIC (15 variants, each booted twice)")
    p.add_argument("--seed", type=Path, metavar="DIR",
                   help="attach a NoCloud seed CD (label cidata) made from DIR's meta-data, "
                        "user-data and optional network-config, on every boot")
    p.add_argument("--ovf-env", type=Path, metavar="FILE",
                   help="attach an OVF environment CD holding FILE as ovf-env.xml (what "
                        "VMware's ISO transport attaches), on every boot")
    p.add_argument("--shutdown-timeout", type=float, default=test_image.SHUTDOWN_TIMEOUT_S,
                   metavar="S", help="seconds to wait for the guest to power off after the "
                   f"ACPI power button before QEMU is stopped "
                   f"(default {test_image.SHUTDOWN_TIMEOUT_S:g})")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pipeline.py",
                                 description="Tiny Core Linux 11 -> container appliance")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_build_args(add_reprobe_arg(sub.add_parser(
        "build", help="run the stages (skipping what is up to date)")))
    add_build_args(sub.add_parser("fetch", help="download and verify every input"), until=False)
    lk = sub.add_parser(
        "lock", help="pin every remote input (sha256) from upstream checksum files",
        description="Resolve every remote input of the recipe to a sha256, trusting only "
                    "upstream checksum files, and write the lock file.")
    add_recipe_args(lk)
    lk.add_argument("--accept-first-use", action="store_true",
                    help="record that you reviewed and accept the first-use pins it prints")
    lk.add_argument("--check", action="store_true",
                    help="resolve afresh and exit 1 if the existing lock differs (writes nothing)")
    add_build_args(sub.add_parser("plan", help="show which stages would run and why"))
    add_recipe_args(add_reprobe_arg(sub.add_parser(
        "doctor", help="check this host: tools, versions, accelerator, disk (and the kernel "
                       "stage's tools when the recipe builds kernel modules)")))
    add_recipe_args(sub.add_parser("show-config", help="print the resolved recipe as JSON"))
    kc = sub.add_parser(
        "kernel-check", help="judge a kernel config for containers (exit 0: ready)",
        description="Report, for every kernel option containerd, runc, CNI and faasd need, "
                    "whether it is built in, a module (and where it comes from) or missing. "
                    "CONFIG is a path or URL; without it, the recipe's kernel.config is read "
                    "from the mirror and the modules the kernel stage builds are counted.")
    kc.add_argument("kconfig", nargs="?", metavar="CONFIG")
    kc.add_argument("--json", action="store_true", help="machine-readable output")
    add_recipe_args(kc)
    add_test_image_args(add_reprobe_arg(sub.add_parser(
        "test-image", help="boot an exported image twice; pass when it says APPLIANCE-READY",
        description="Boot each IMAGE (default: the qcow2 and OVA out/manifest.json lists) "
                    "on a fresh copy-on-write overlay, twice with an ACPI power-off in "
                    "between; each boot passes when the serial console shows APPLIANCE-READY "
                    "and the gateway's /healthz (guest port 8080) answers 200. Exit 0 only if "
                    "every image passes.")))
    cl = sub.add_parser("clean", help="remove build/ and out/ if the pipeline made them (the "
                                      "cache is kept)")
    cl.add_argument("--cache", action="store_true",
                    help="also remove the cache: downloads, images, the build SSH key")
    return ap


def load_recipe(args) -> config.LoadedRecipe:
    files = args.config or [REPO / "appliance.toml"]
    return config.load(files)


def lock_path(args, loaded: config.LoadedRecipe) -> Path:
    return args.lock or loaded.default_lock_path


def make_context(args) -> Context:
    loaded = load_recipe(args)
    paths.claim(cache_root())
    fetcher = Fetcher(offline=getattr(args, "offline", False), jobs=getattr(args, "jobs", 4))
    path = lock_path(args, loaded)
    pins = select_lock(loaded, path, locked=args.locked, offline=args.offline, fetcher=fetcher)
    runner = Runner(log_dir=paths.claim(build_root()) / "logs")
    return Context(loaded, pins, fetcher, runner, build_root())


def cmd_build(args) -> int:
    ctx = make_context(args)
    until = "fetch" if args.verb == "fetch" else args.until
    stage_runner(ctx.build_root).execute(ctx, until=until, force=set(args.force))
    log.say(f"finished{' (until ' + until + ')' if until else ''}")
    return 0


def cmd_plan(args) -> int:
    loaded = load_recipe(args)
    path = lock_path(args, loaded)
    current = lockfile.read(path)
    if current is None or lockfile.staleness(current, loaded.recipe):
        print(f"lock: {path} {'is out of date' if current else 'does not exist'}; "
              "`build` would resolve pins first (`--locked` would refuse)")
        current = current or lockfile.Lock(lockfile.identity(loaded.recipe), {})
    ctx = Context(loaded, current, Fetcher(offline=True), Runner(), build_root(), dry_run=True)
    decisions = stage_runner(build_root()).execute(ctx, until=args.until, force=set(args.force),
                                                   dry_run=True)
    for d in decisions:
        print(d.describe())
    return 0


def cmd_lock(args) -> int:
    loaded = load_recipe(args)
    path = lock_path(args, loaded)
    previous = lockfile.read(path)
    if args.check:
        return check_lock(loaded, path, previous)
    log.say(f"locking {', '.join(map(str, loaded.files))} -> {path}")
    paths.claim(cache_root())
    resolved = lockfile.resolve(loaded.recipe, Fetcher())
    lockfile.settle_acceptance(resolved, previous, accept=args.accept_first_use)
    lockfile.write(path, resolved)
    log.say(f"wrote {path}: {len(resolved.pins)} pinned inputs")
    for line in lockfile.review_block(resolved):  # even with -q: a person must read it
        print(line, file=sys.stderr, flush=True)
    return 0


def check_lock(loaded: config.LoadedRecipe, path: Path, previous) -> int:
    """`lock --check`: the committed lock still says what upstream and the recipe say."""
    if previous is None:
        raise PipelineError(f"{path}: no lock to check", "run `python pipeline.py lock`")
    log.say(f"checking {path} against upstream")
    diffs = lockfile.differences(previous, lockfile.resolve(loaded.recipe, Fetcher()))
    if diffs:
        log.error(f"{path} is stale:\n" + "\n".join(f"  {d}" for d in diffs))
        return 1
    log.say(f"{path} is current: {len(previous.pins)} pins")
    return 0


def cmd_doctor(args) -> int:
    try:
        recipe = load_recipe(args).recipe
        unread = None
    except PipelineError as exc:  # the host checks are still worth showing
        recipe, unread = None, doctor.Check("recipe", False, f"not checked: {exc.message}",
                                            required=False)
    checks = doctor.run_checks(build_root(), recipe) + ([unread] if unread else [])
    print(doctor.render(checks))
    return 0 if doctor.healthy(checks) else 1


def cmd_show_config(args) -> int:
    print(config.to_json(load_recipe(args).recipe))
    return 0


def kernel_config_text(args) -> tuple[str, str, dict[str, str]]:
    """(text, where it came from, modules our kernel stage adds) for kernel-check."""
    if args.kconfig and "://" not in args.kconfig:
        path = Path(args.kconfig)
        try:
            return path.read_text(encoding="utf-8", errors="replace"), str(path), {}
        except OSError as exc:
            raise PipelineError(f"{path}: cannot read: {exc.strerror}") from None
    built: dict[str, str] = {}
    if args.kconfig:
        urls = (checked_url(args.kconfig, "kernel-check CONFIG"),)
    else:
        recipe = load_recipe(args).recipe
        if recipe.kernel.config is None:
            raise PipelineError("the recipe has no kernel.config",
                                "pass a config: `pipeline.py kernel-check PATH`")
        urls = recipe.mirror_urls(recipe.kernel.config)
        kver = recipe.tinycore.kernel
        built = {m: f"{m}-{kver}.tcz, built by the kernel stage" for m in recipe.kernel.modules}
    found = Fetcher().get_text(urls)
    assert found is not None  # get_text raises when no URL answers
    return found[1], found[0], built


def checked_url(url: str, what: str) -> str:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # "http://[::1": urlsplit refuses a malformed host
        raise UsageError(f"{what}: {url!r} is not a valid URL ({exc})",
                         "give a path, or an http, https or file URL") from None
    if scheme not in ("http", "https", "file"):
        raise UsageError(f"{what}: {url!r}: unsupported URL scheme {scheme!r}",
                         "give a path, or an http, https or file URL")
    return url


def cmd_kernel_check(args) -> int:
    text, source, built = kernel_config_text(args)
    verdicts = kernel.judge(kernel.read_config(text, source), kernel.load_options(), built)
    print(kernel.to_json(verdicts, source) if args.json else kernel.render(verdicts, source))
    return 1 if kernel.missing_required(verdicts) else 0


def cmd_test_image(args) -> int:
    if args.memory < 64 or (args.timeout is not None and args.timeout <= 0) \
            or args.shutdown_timeout < 0 or args.boots < 1:
        raise UsageError("test-image: --memory must be at least 64 (MB), --boots at least "
                            "1 and the timeouts positive")
    cdroms = test_image.first_boot_cds(args.seed, args.ovf_env)  # bad input: before any boot
    options = test_image.Options(args.memory, args.timeout, args.shutdown_timeout,
                                 test_image.variants(args.disk_bus, args.nic, args.matrix),
                                 args.boots, cdroms)
    return test_image.run(args.image or None, options)


CACHE_CONTENTS = ("downloads (re-fetched on the next build), container images, Packer's cache, "
                  "the stand-in's builds, and the build SSH key (keys/build_ed25519: the next "
                  "build makes a new one, so the remastered ISO changes)")


def cmd_clean(args) -> int:
    targets = [build_root(), out_root()] + ([cache_root()] if args.cache else [])
    present = [t for t in targets if t.exists()]
    foreign = [t for t in present if not paths.made_by_pipeline(t)]
    if foreign:  # checked for all before anything is deleted
        raise PipelineError(
            f"refusing to delete {', '.join(map(str, foreign))}: the pipeline did not make "
            f"it (no {paths.MARKER} marker inside); nothing was deleted",
            "point APPLIANCE_BUILD/APPLIANCE_OUT/APPLIANCE_CACHE elsewhere, or delete it "
            "yourself if it really holds only build output")
    for target in present:
        if target == cache_root():
            log.say(f"removing {target}: {CACHE_CONTENTS}")
        shutil.rmtree(target)
        log.say(f"removed {target}")
    return 0


VERBS = {
    "build": cmd_build, "fetch": cmd_build, "plan": cmd_plan, "lock": cmd_lock,
    "doctor": cmd_doctor, "show-config": cmd_show_config, "kernel-check": cmd_kernel_check,
    "test-image": cmd_test_image, "clean": cmd_clean,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log.set_quiet(args.quiet)
    if getattr(args, "reprobe", False):
        qemu.reprobe()
    with signals.terminate_as_interrupt():
        try:
            return VERBS[args.verb](args)
        except PipelineError as exc:
            if args.debug:
                traceback.print_exc()
            log.error(str(exc))
            return exc.exit_code
        except KeyboardInterrupt as exc:
            log.error(f"{signals.describe(exc)}; finished stages and cached downloads are kept")
            return signals.exit_status(exc)
        except OSError as exc:
            # The last net under the writes and reads no stage wraps itself (a full disk, a
            # read-only folder): the file and the reason, not a traceback.
            if args.debug:
                traceback.print_exc()
            where = f"{exc.filename}: " if exc.filename else ""
            log.error(f"{where}{exc.strerror or exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
