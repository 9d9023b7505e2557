"""The extra initrds the live ISO loads after corepure64.gz (docs/decisions.md#two-initrds).

boot/appliance.gz: what an installed system keeps. /opt/tcemirror (the recipe's
guest_mirror), /opt/.filetool.lst and /opt/.xfiletool.lst, /opt/bootsync.sh and
/opt/bootlocal.sh, /opt/firstboot.sh with its parsers /opt/yaml-subset.awk and
/opt/ovf-env.awk (iso-remaster/), and the settings those scripts read from
/etc/sysconfig/appliance/ (hostname, services, ready_timeout, firstboot_sources, and the tc
password hash, 0600, only when the recipe sets one). Settings are data files, never pasted into the
scripts, so the scripts are checked by shellcheck as they ship.

boot/diskroot.gz: the /init of a traditional install (loaded after corepure64.gz, it finds
the ext4 root by UUID on any disk bus and switch_roots into it); the live ISO never loads it.

boot/build.gz: what only the build needs: the build key's public half as tc's
/home/tc/.ssh/authorized_keys.

The kernel unpacks each archive over the previous one, and for a directory that already
exists it still applies the archive's owner and mode (init/initramfs.c: mkdir, then chown
and chmod). So every parent directory is written with the owner and mode it has in the base
corepure64.gz (e.g. /opt is root:staff 775 there), read from that archive; only directories
the base lacks get ours.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.errors import RemasterError
from appliance.tinycore import cpio

TC_UID = 1001  # tc-config creates tc as the first user (uid 1001), in group staff
STAFF_GID = 50
SETTINGS = "etc/sysconfig/appliance"
# Directories the base may lack (tc-config makes /home/tc at boot on tc11): owner, mode.
NEW_DIRS = {
    "home/tc": (TC_UID, STAFF_GID, 0o755),
    "home/tc/.ssh": (TC_UID, STAFF_GID, 0o700),
    SETTINGS: (0, 0, 0o755),
}


@dataclass(frozen=True)
class LiveSettings:
    """What appliance.gz carries from the recipe (all validated by the recipe model)."""

    guest_mirror: str
    hostname: str
    services: tuple[str, ...]
    ready_timeout: int
    tc_password_hash: str | None = None
    # the recipe's firstboot.sources, in order; () turns first-boot configuration off
    firstboot_sources: tuple[str, ...] = ("nocloud", "ovf")


def base_directories(corepure64_gz: bytes) -> dict[str, cpio.Entry]:
    """Every entry of the base initrd by path, without file contents (only modes matter)."""
    try:
        entries = cpio.read_gzip_newc(corepure64_gz)
    except ValueError as exc:
        raise RemasterError(f"boot/corepure64.gz is not a gzip'd newc initramfs ({exc}); "
                            "not a Tiny Core ISO") from None
    return {e.path.strip("/").removeprefix("./"): cpio.Entry(e.path, e.mode, b"", e.rdev,
                                                             e.uid, e.gid) for e in entries}


def parents(files: list[cpio.Entry], base: dict[str, cpio.Entry]) -> list[cpio.Entry]:
    """A directory entry for every parent of `files`, as the base initrd has it."""
    wanted = sorted({str(p) for f in files for p in PurePosixPath(f.path).parents
                     if str(p) != "."})
    dirs = []
    for path in wanted:
        found = base.get(path)
        if found is not None and not stat.S_ISDIR(found.mode):
            raise RemasterError(f"boot/corepure64.gz has /{path} as a non-directory; "
                                "the appliance's files cannot be placed below it")
        if found is not None:
            dirs.append(cpio.directory(path, stat.S_IMODE(found.mode), found.uid, found.gid))
        else:
            uid, gid, mode = NEW_DIRS.get(path, (0, 0, 0o755))
            dirs.append(cpio.directory(path, mode, uid, gid))
    return dirs


def _staff(path: str, data: bytes, perm: int) -> cpio.Entry:
    # /opt belongs to group staff on Tiny Core, so tc can edit these files
    return cpio.file(path, data, perm, 0, STAFF_GID)


def appliance_files(settings: LiveSettings, templates: Path) -> list[cpio.Entry]:
    def template(name: str) -> bytes:
        path = templates / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RemasterError(f"{path}: cannot read ({exc.strerror})") from None

    files = [
        _staff("opt/tcemirror", f"{settings.guest_mirror}\n".encode(), 0o664),
        _staff("opt/.filetool.lst", template("filetool.lst"), 0o664),
        _staff("opt/.xfiletool.lst", template("xfiletool.lst"), 0o664),
        _staff("opt/bootsync.sh", template("bootsync.sh"), 0o775),
        _staff("opt/bootlocal.sh", template("bootlocal.sh"), 0o775),
        # every power-off and reboot stops the services first (Tiny Core's shutdown does not)
        cpio.file("opt/appliance-stop.sh", template("appliance-stop.sh"), 0o755),
        # the first-boot configurator (bootlocal.sh runs it before any service) handles
        # secrets as root: root's files, not staff's
        cpio.file("opt/firstboot.sh", template("firstboot.sh"), 0o755),
        cpio.file("opt/yaml-subset.awk", template("yaml-subset.awk")),
        cpio.file("opt/ovf-env.awk", template("ovf-env.awk")),
        # acpid.tcz's (acpid2) rule for the ACPI power button: appliance-stop.sh poweroff
        cpio.file("usr/local/etc/acpi/events/power-button", template("acpi-power-button")),
        cpio.file(f"{SETTINGS}/hostname", f"{settings.hostname}\n".encode()),
        cpio.file(f"{SETTINGS}/services", "".join(f"{s}\n" for s in settings.services).encode()),
        cpio.file(f"{SETTINGS}/ready_timeout", f"{settings.ready_timeout}\n".encode()),
        # always written (empty: first boot reads nothing), so /opt/firstboot.sh never
        # guesses a default of its own
        cpio.file(f"{SETTINGS}/firstboot_sources",
                  "".join(f"{s}\n" for s in settings.firstboot_sources).encode()),
    ]
    if settings.tc_password_hash:
        files.append(cpio.file(f"{SETTINGS}/tc_password_hash",
                               f"{settings.tc_password_hash}\n".encode(), 0o600))
    return files


def diskroot_files(templates: Path) -> list[cpio.Entry]:
    """boot/diskroot.gz: the /init that a traditional install boots with corepure64.gz, to
    find its ext4 root by UUID on any disk bus (iso-remaster/disk-init.sh)."""
    path = templates / "disk-init.sh"
    try:
        return [cpio.file("init", path.read_bytes(), 0o755)]
    except OSError as exc:
        raise RemasterError(f"{path}: cannot read ({exc.strerror})") from None


def build_files(public_key: str) -> list[cpio.Entry]:
    key = public_key.strip()
    if not key.startswith("ssh-ed25519 ") or "\n" in key:
        raise RemasterError("the build key's public half is not one ssh-ed25519 line")
    return [cpio.file("home/tc/.ssh/authorized_keys", f"{key}\n".encode(), 0o600,
                      TC_UID, STAFF_GID)]


def archive(files: list[cpio.Entry], base: dict[str, cpio.Entry], epoch: int) -> bytes:
    """gzip'd newc of `files` and their parents, every entry dated `epoch`."""
    return cpio.gzip_newc(parents(files, base) + files, mtime=epoch)
