#!/bin/sh
# /init of boot/diskroot.gz: the traditional install's boot, on any disk bus.
#
# The installed system's root is an ext4 partition found by its filesystem UUID
# (`root=UUID=<uuid>` on the boot line), never by a device name: the same disk is /dev/sda
# on IDE, SATA and virtio-scsi, /dev/vda on virtio-blk, /dev/nvme0n1 on NVMe. tc11 builds
# ATA_PIIX, SATA_AHCI, SCSI_VIRTIO and BLK_DEV_NVME in, but virtio_blk is a module of its
# base initrd (config-5.4.3-tinycore64; tinycorelinux/sorter sorter.sh @ bf13d13 leaves
# drivers/block in the base), so a kernel with no initrd cannot mount a virtio-blk root.
#
# extlinux loads corepure64.gz, then this archive, whose /init replaces Tiny Core's (later
# archives overwrite earlier files). It loads the base's disk modules, waits for the
# partition whose ext4 superblock carries the UUID, mounts it and switch_roots into its
# /sbin/init: from there Tiny Core boots as from any disk root, and containers run on ext4,
# never on this initramfs. It uses only tc11 busybox applets (no blkid, findfs or mdev).
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
NEWROOT=/mnt/root
WAIT_S=30

say() {
    echo "diskroot: $*" >/dev/console
}

wanted_uuid() {
    read -r _cmdline </proc/cmdline
    for _arg in $_cmdline; do
        case "$_arg" in
            root=UUID=*) echo "${_arg#root=UUID=}" | tr -d '-' | tr 'A-F' 'a-f' ;;
        esac
    done
}

# /dev has no devtmpfs on tc11 (DEVTMPFS is not set): make the node from sysfs.
node_of() {
    _name=$1
    [ -b "/dev/$_name" ] && return 0
    _numbers=$(cat "/sys/class/block/$_name/dev" 2>/dev/null) || return 1
    mknod "/dev/$_name" b "${_numbers%%:*}" "${_numbers##*:}" 2>/dev/null
}

# The ext4 UUID of a block device, read from its superblock (1024 bytes in: magic 0xEF53 at
# 0x38, UUID at 0x68), as 32 lower-case hex digits; empty when it is no ext2/3/4.
fs_uuid() {
    _magic=$(dd if="$1" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    [ "$_magic" = "53ef" ] || return 0
    dd if="$1" bs=1 skip=1128 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n'
}

find_root() {
    for _path in /sys/class/block/*; do
        _name=${_path##*/}
        case "$_name" in loop* | ram* | zram* | sr* | fd*) continue ;; esac
        node_of "$_name" || continue
        if [ "$(fs_uuid "/dev/$_name")" = "$1" ]; then
            echo "/dev/$_name"
            return 0
        fi
    done
    return 1
}

fail() {
    say "ERROR: $*"
    # the test-image contract: a marker line instead of a silent hang
    echo "APPLIANCE-NOT-READY root-disk" >/dev/console
    say "dropping to a shell on the console"
    exec sh </dev/console >/dev/console 2>&1
}

main() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    _uuid=$(wanted_uuid)
    [ -n "$_uuid" ] || fail "no root=UUID=... on the boot line"
    # virtio_blk (virtio-blk disks) and hv_storvsc (Hyper-V) are modules of the base; the
    # other buses' drivers are built in. A module the kernel lacks is no error.
    for _module in virtio_blk hv_storvsc; do
        modprobe "$_module" 2>/dev/null || true
    done
    _tries=0
    while ! _root=$(find_root "$_uuid"); do
        _tries=$((_tries + 1))
        [ "$_tries" -le "$WAIT_S" ] || fail "no ext4 partition with UUID=$_uuid after $WAIT_S s (block devices: $(cd /sys/class/block && echo *))"
        sleep 1
    done
    say "root UUID=$_uuid is $_root"
    mkdir -p "$NEWROOT"
    # read-only, as the kernel mounts root=; Tiny Core's rcS remounts it read-write
    mount -t ext4 -o ro "$_root" "$NEWROOT" || fail "cannot mount $_root"
    [ -x "$NEWROOT/sbin/init" ] || fail "$_root has no /sbin/init"
    umount /sys
    umount /proc
    exec switch_root "$NEWROOT" /sbin/init
}

main "$@"
