#!/bin/sh
# install-to-disk.sh of tc-appliance: runs on the live ISO (as root, through Packer) and
# installs Tiny Core with the appliance's extensions onto the VM's disk.
#
# Why a disk at all: runc's pivot_root fails with "invalid argument" when / is the
# initramfs rootfs, which is where Tiny Core runs from the CD (docs/decisions.md#install-to-disk).
#
#   traditional  the base initramfs (and appliance.gz) unpacked onto an ext4 partition, every
#                extension unpacked into it in load order, its tce.installed script run
#                chrooted, depmod + ldconfig; booted with corepure64.gz + diskroot.gz, whose
#                /init finds the root by its UUID on any disk bus (virtio_blk is a module of
#                the base) and switch_roots into it, so the system depends on no loop mount
#                and no tce.installed marker, and / is the ext4 disk.
#   frugal       kernel + initrds in /boot, the extensions in /tce/optional with onboot.lst,
#                booted with noembed tce=UUID=<uuid> (/ is a tmpfs reached by switch_root);
#                containerd's, faasd's and sshd's state lives in /appliance-state on the disk
#                and /opt/bootsync.sh binds it at every boot.
#
# The .tcz files come from the CD's /cde/optional (no upload). Input, from the packer
# stage's environment: APPLIANCE_EXTENSIONS (the load order, "a.tcz b.tcz ..."),
# APPLIANCE_INSTALL_ONLY (of those, what a frugal onboot.lst leaves out), APPLIANCE_MODE,
# APPLIANCE_BOOT_CODES (the recipe's boot.disk), APPLIANCE_KERNEL and APPLIANCE_INITRDS and
# APPLIANCE_DISKROOT (paths on the CD), APPLIANCE_DISK.
#
# The partition is named by the UUID of its filesystem everywhere (root=UUID=, tce=UUID=),
# never by a device name: it is sda1 on IDE, SATA and virtio-scsi, vda1 on virtio-blk,
# nvme0n1p1 on NVMe. Tiny Core's find_mountpoint takes UUID= (tinycorelinux/Core-scripts
# etc/init.d/tc-functions @ 0ed6e60, through /sbin/blkid -lt).
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

: "${APPLIANCE_EXTENSIONS:?the extension load order is not set (the packer stage sets it)}"
: "${APPLIANCE_MODE:=traditional}"
: "${APPLIANCE_INSTALL_ONLY:=}"
: "${APPLIANCE_BOOT_CODES:=}"
: "${APPLIANCE_KERNEL:=/boot/vmlinuz64}"
: "${APPLIANCE_INITRDS:=/boot/corepure64.gz /boot/appliance.gz}"
: "${APPLIANCE_DISKROOT:=/boot/diskroot.gz}"
: "${APPLIANCE_DISK:=/dev/sda}"

TARGET=/mnt/appliance-root
SCRATCH=/tmp/appliance-install
STATE=appliance-state
STATE_DIRS="var/lib/containerd var/lib/faasd var/lib/faasd-provider ssh"
RECORD=usr/local/share/tc-appliance
# The last console= is /dev/console: user-space output (the APPLIANCE-* markers) reaches
# the serial port (docs/architecture.md#markers).
CONSOLES="console=tty0 console=ttyS0,115200"

say() {
    echo "install-to-disk: $*"
}

die() {
    echo "install-to-disk: ERROR: $*" >&2
    exit 1
}

# The CD the live system booted from: the directory under /mnt with cde/optional and the kernel.
find_cd() {
    for _dir in /mnt/*; do
        if [ -d "$_dir/cde/optional" ] && [ -f "$_dir$APPLIANCE_KERNEL" ]; then
            echo "$_dir"
            return 0
        fi
    done
    _cdroms=$(cat /etc/sysconfig/cdroms 2>/dev/null) || _cdroms=""
    for _dev in $_cdroms; do
        mkdir -p "/mnt/$_dev"
        mount -t iso9660 -o ro "/dev/$_dev" "/mnt/$_dev" 2>/dev/null || continue
        if [ -d "/mnt/$_dev/cde/optional" ]; then
            echo "/mnt/$_dev"
            return 0
        fi
    done
    return 1
}

# The device node of a new partition: udev (Tiny Core's base) makes it; if it did not within
# a few seconds, it is made from sysfs.
wait_for_node() {
    _node=$1
    _tries=0
    while [ ! -b "$_node" ] && [ "$_tries" -lt 10 ]; do
        if command -v udevadm >/dev/null 2>&1; then
            udevadm trigger --subsystem-match=block 2>/dev/null || true
            udevadm settle 2>/dev/null || true
        fi
        [ -b "$_node" ] && break
        sleep 1
        _tries=$((_tries + 1))
    done
    if [ ! -b "$_node" ]; then
        _numbers=$(cat "/sys/class/block/${_node##*/}/dev" 2>/dev/null) ||
            die "$_node did not appear after partitioning $APPLIANCE_DISK"
        mknod "$_node" b "${_numbers%%:*}" "${_numbers##*:}"
    fi
}

# One bootable primary Linux partition from 1 MiB to the end (fdisk's commands work for
# busybox's fdisk and util-linux's alike).
partition() {
    [ -b "$APPLIANCE_DISK" ] || die "$APPLIANCE_DISK is not a block device; the build VM attaches its disk as IDE"
    if grep -q "^$APPLIANCE_DISK" /proc/mounts; then
        die "$APPLIANCE_DISK is in use (mounted); refusing to repartition it"
    fi
    say "partitioning $APPLIANCE_DISK"
    dd if=/dev/zero of="$APPLIANCE_DISK" bs=512 count=2048 2>/dev/null
    # fdisk exits non-zero when the kernel keeps the old table; the node check below decides
    printf 'o\nn\np\n1\n2048\n\na\n1\nw\n' | fdisk -u "$APPLIANCE_DISK" >"$SCRATCH/fdisk.log" 2>&1 || true
    wait_for_node "$PART"
    # ext4 without 64bit: what syslinux 6's extlinux can read
    mkfs.ext4 -q -F -O ^64bit -L tc-appliance -U "$UUID" "$PART" || die "mkfs.ext4 $PART failed"
    # read by the packer stage into build.json and manifest.json
    say "root filesystem UUID=$UUID"
    mkdir -p "$TARGET"
    # discard: what the install deletes on the disk is unmapped from the qcow2 at once
    # (Packer's disk_discard = "unmap"); a kernel or disk without it mounts plainly
    mount -t ext4 -o discard "$PART" "$TARGET" 2>/dev/null ||
        mount -t ext4 "$PART" "$TARGET" || die "cannot mount $PART"
}

cd_file() {
    [ -f "$CD$1" ] || die "$1 is not on the CD ($CD$1)"
    echo "$CD$1"
}

tcz_on_cd() {
    _tcz=$CD/cde/optional/$1
    [ -f "$_tcz" ] || die "$1 is in the load order but not on the CD ($_tcz): rebuild the ISO (remaster stage)"
    echo "$_tcz"
}

# Initrds except build.gz, which only the live system loads (it holds the build key).
disk_initrds() {
    for _initrd in $APPLIANCE_INITRDS; do
        case "$_initrd" in */build.gz) continue ;; esac
        echo "$_initrd"
    done
}

unpack_initrd() {
    _file=$(cd_file "$1")
    say "unpacking $1"
    (cd "$TARGET" && zcat "$_file" | cpio -idmu 2>"$SCRATCH/cpio.log") ||
        die "unpacking $1 failed: $(tail -n 3 "$SCRATCH/cpio.log")"
}

# The extension's files into the root (copied from a loop mount of the .tcz: busybox's base
# has no unsquashfs), and their list for verify.sh.
unpack_extension() {
    _tcz=$(tcz_on_cd "$1")
    _mnt=$SCRATCH/tcz
    mkdir -p "$_mnt" "$TARGET/$RECORD/installed"
    mount -t squashfs -o loop,ro "$_tcz" "$_mnt" || die "cannot loop-mount $_tcz"
    if ! (cd "$_mnt" && find . -mindepth 1 ! -type d) >"$TARGET/$RECORD/installed/${1%.tcz}.list" ||
        ! cp -a "$_mnt/." "$TARGET/"; then
        umount "$_mnt"
        die "copying $1 into $TARGET failed"
    fi
    umount "$_mnt"
}

chroot_mounts() {
    mkdir -p "$TARGET/proc" "$TARGET/sys" "$TARGET/dev" "$TARGET/tmp"
    mount -t proc proc "$TARGET/proc"
    mount -t sysfs sysfs "$TARGET/sys"
    mount --bind /dev "$TARGET/dev"
}

chroot_unmounts() {
    for _dir in dev sys proc; do
        umount "$TARGET/$_dir" 2>/dev/null || true
    done
}

# What tce-load does after copying, done in the new root: each install script in load
# order, then the module index and the linker cache.
finish_root() {
    chroot_mounts
    for _tcz in $APPLIANCE_EXTENSIONS; do
        _script=/usr/local/tce.installed/${_tcz%.tcz}
        if [ -x "$TARGET$_script" ]; then
            say "running $_script in the new root"
            chroot "$TARGET" "$_script" || { chroot_unmounts; die "$_script failed in the new root"; }
        fi
    done
    if [ -x "$TARGET/sbin/depmod" ]; then
        chroot "$TARGET" /sbin/depmod -a "$(uname -r)" || { chroot_unmounts; die "depmod failed in the new root"; }
    fi
    if [ -x "$TARGET/sbin/ldconfig" ]; then
        chroot "$TARGET" /sbin/ldconfig || { chroot_unmounts; die "ldconfig failed in the new root"; }
    fi
    chroot_unmounts
    # Without devtmpfs the kernel opens /dev/console of the root before init runs.
    [ -c "$TARGET/dev/console" ] || mknod -m 600 "$TARGET/dev/console" c 5 1
    [ -c "$TARGET/dev/null" ] || mknod -m 666 "$TARGET/dev/null" c 1 3
}

# The build key, so Packer can log in again after the reboot (cleanup.sh removes it).
build_key_into() { # $1 = the home of tc in the tree being built
    [ -s /home/tc/.ssh/authorized_keys ] || die "the live system has no /home/tc/.ssh/authorized_keys (build.gz not loaded?)"
    if [ ! -d "$1" ] && [ -d "$TARGET/etc/skel" ]; then
        mkdir -p "$1"
        cp -a "$TARGET/etc/skel/." "$1/"
    fi
    mkdir -p "$1/.ssh"
    cp /home/tc/.ssh/authorized_keys "$1/.ssh/authorized_keys"
    chmod 700 "$1/.ssh"
    chmod 600 "$1/.ssh/authorized_keys"
    chown -R "$TC_IDS" "$1"
}

install_traditional() {
    for _initrd in $(disk_initrds); do
        unpack_initrd "$_initrd"
    done
    for _tcz in $APPLIANCE_EXTENSIONS; do
        say "unpacking $_tcz"
        unpack_extension "$_tcz"
    done
    finish_root
    if [ -f "$CD/mydata.tgz" ]; then
        say "restoring mydata.tgz into the root"
        tar -xzf "$CD/mydata.tgz" -C "$TARGET" || die "mydata.tgz from the CD is unreadable"
    fi
    # the recipe's own key, for cleanup.sh to put back in place of the build key
    if [ -f "$TARGET/home/tc/.ssh/authorized_keys" ]; then
        cp -p "$TARGET/home/tc/.ssh/authorized_keys" "$TARGET/$RECORD/authorized_keys.recipe"
    fi
    build_key_into "$TARGET/home/tc"
    mkdir -p "$TARGET/var/lib/containerd" "$TARGET/var/lib/faasd" "$TARGET/var/lib/faasd-provider"
    echo "$APPLIANCE_EXTENSIONS" | tr ' ' '\n' | sed '/^$/d' >"$TARGET/$RECORD/extensions.lst"
    mkdir -p "$TARGET/boot"
    _base=$(echo "$APPLIANCE_INITRDS" | cut -d ' ' -f 1)
    cp "$(cd_file "$_base")" "$(cd_file "$APPLIANCE_DISKROOT")" "$TARGET/boot/"
    BOOT_INITRDS="/boot/${_base##*/},/boot/${APPLIANCE_DISKROOT##*/}"
    BOOT_APPEND="root=UUID=$UUID"
}

# mydata.tgz for the tce dir: the recipe's restore files plus the build key.
frugal_backup() {
    _tree=$SCRATCH/mydata
    rm -rf "$_tree"
    mkdir -p "$_tree"
    if [ -f "$CD/mydata.tgz" ]; then
        tar -xzf "$CD/mydata.tgz" -C "$_tree" || die "mydata.tgz from the CD is unreadable"
    fi
    build_key_into "$_tree/home/tc"
    (cd "$_tree" && tar -czf "$TARGET/tce/mydata.tgz" .) || die "cannot write tce/mydata.tgz"
}

install_frugal() {
    mkdir -p "$TARGET/boot" "$TARGET/tce/optional"
    BOOT_INITRDS=""
    for _initrd in $(disk_initrds); do
        cp "$(cd_file "$_initrd")" "$TARGET/boot/"
        BOOT_INITRDS="${BOOT_INITRDS:+$BOOT_INITRDS,}/boot/${_initrd##*/}"
    done
    : >"$TARGET/tce/onboot.lst"
    for _tcz in $APPLIANCE_EXTENSIONS; do
        _src=$(tcz_on_cd "$_tcz")
        say "copying $_tcz to tce/optional"
        cp "$_src" "$TARGET/tce/optional/"
        for _meta in "$_src.md5.txt" "$_src.dep"; do
            [ -f "$_meta" ] && cp "$_meta" "$TARGET/tce/optional/"
        done
        case " $APPLIANCE_INSTALL_ONLY " in
            *" $_tcz "*) say "$_tcz: the installer's tool (live.install_only), not in onboot.lst" ;;
            *) echo "$_tcz" >>"$TARGET/tce/onboot.lst" ;;
        esac
    done
    for _dir in $STATE_DIRS; do
        mkdir -p "$TARGET/$STATE/$_dir"
    done
    # the recipe's backup alone, for cleanup.sh to put back in place of the one with the build key
    if [ -f "$CD/mydata.tgz" ]; then
        cp "$CD/mydata.tgz" "$TARGET/$STATE/mydata.recipe.tgz"
    fi
    frugal_backup
    chmod 700 "$TARGET/$STATE"
    chown -R "$TC_IDS" "$TARGET/tce"
    # waitusb: tc-config waits (up to 10 s) until blkid sees the partition, whose driver
    # udev loads from the base (virtio_blk) while tc-config already runs
    BOOT_APPEND="noembed waitusb=10:UUID=$UUID tce=UUID=$UUID"
}

install_bootloader() {
    mkdir -p "$TARGET/boot/extlinux"
    cp "$(cd_file "$APPLIANCE_KERNEL")" "$TARGET/boot/"
    _kernel=/boot/${APPLIANCE_KERNEL##*/}
    {
        echo "# Written by tc-appliance (packer/scripts/install-to-disk.sh), $APPLIANCE_MODE install"
        echo "SERIAL 0 115200"
        echo "DEFAULT appliance"
        echo "PROMPT 0"
        echo "TIMEOUT 10"
        echo "LABEL appliance"
        echo "	KERNEL $_kernel"
        [ -n "$BOOT_INITRDS" ] && echo "	INITRD $BOOT_INITRDS"
        echo "	APPEND $(echo "$BOOT_APPEND $APPLIANCE_BOOT_CODES $CONSOLES" | tr -s ' ')"
    } >"$TARGET/boot/extlinux/extlinux.conf"
    extlinux --install "$TARGET/boot/extlinux" >"$SCRATCH/extlinux.log" 2>&1 ||
        die "extlinux --install failed: $(tail -n 3 "$SCRATCH/extlinux.log")"
    _mbr=""
    for _candidate in /usr/local/share/syslinux/mbr.bin /usr/share/syslinux/mbr.bin /usr/lib/syslinux/mbr/mbr.bin; do
        [ -f "$_candidate" ] && _mbr=$_candidate && break
    done
    [ -n "$_mbr" ] || die "no syslinux mbr.bin (is syslinux.tcz loaded on the live ISO?)"
    dd if="$_mbr" of="$APPLIANCE_DISK" bs=440 count=1 conv=notrunc 2>/dev/null
    say "boot line: $(sed -n 's/^	APPEND //p' "$TARGET/boot/extlinux/extlinux.conf")"
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (Packer's execute_command uses sudo)"
    case "$APPLIANCE_MODE" in
        traditional | frugal) ;;
        *) die "APPLIANCE_MODE=$APPLIANCE_MODE: expected traditional or frugal" ;;
    esac
    CD=$(find_cd) || die "no CD with cde/optional and $APPLIANCE_KERNEL under /mnt"
    PART=${APPLIANCE_DISK}1
    # a fresh filesystem UUID (the kernel's generator: procfs, no uuidgen in tc11's base)
    UUID=$(cat /proc/sys/kernel/random/uuid) || die "cannot read a UUID from /proc"
    TC_IDS="$(id -u tc):$(id -g tc)"
    rm -rf "$SCRATCH"
    mkdir -p "$SCRATCH"
    say "$APPLIANCE_MODE install from $CD onto $APPLIANCE_DISK"
    partition
    "install_$APPLIANCE_MODE"
    install_bootloader
    sync
    umount "$TARGET"
    say "done"
}

main "$@"
