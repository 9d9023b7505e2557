#!/bin/sh
# cleanup.sh of tc-appliance: the last step on the installed system (as root, through
# Packer) before it powers off. It removes everything unique to this machine that the build
# created, so every copy of the image makes its own at its first boot (docs/decisions.md#per-machine-secrets):
# the faasd basic-auth secrets and the rest of containerd's and faasd's state (verify.sh
# started them), the SSH host keys, DHCP leases, logs and shell history, and the build's SSH
# key (the recipe's own authorized_keys, if its restore data has one, is put back). Freed
# blocks are discarded (unmapped from the qcow2) where the disk can; else it fills the free
# space with zeros so the qcow2 compresses. Then it syncs.
#
# Input: APPLIANCE_MODE (traditional|frugal); the services come from /opt/appliance-stop.sh.
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

: "${APPLIANCE_MODE:=traditional}"
: "${APPLIANCE_STOP:=/opt/appliance-stop.sh}"

RECORD=/usr/local/share/tc-appliance
# /var/lib/appliance: firstboot.sh's state (the applied id, the per-machine salt)
STATE_DIRS="/var/lib/containerd /var/lib/faasd /var/lib/faasd-provider /var/lib/cni /var/lib/appliance"

say() {
    echo "cleanup: $*"
}

# The same stop as every power-off (/opt/appliance-stop.sh, from appliance.gz): services in
# reverse order, bounded waits, an APPLIANCE-STOP line each on the console.
stop_services() {
    if [ -x "$APPLIANCE_STOP" ]; then
        "$APPLIANCE_STOP" || say "appliance-stop.sh failed; going on"
    else
        say "$APPLIANCE_STOP is missing; services not stopped"
    fi
}

# Leftover container mounts under the state folders would make rm fail half-way.
unmount_below() {
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r _mount; do
            umount "$_mount" 2>/dev/null || umount -l "$_mount" 2>/dev/null || true
        done
}

empty_dir() {
    [ -d "$1" ] || return 0
    unmount_below "$1"
    find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

# Frugal: the tce directory's disk, where the state and the backup live. Traditional: /.
disk_root() {
    if [ "$APPLIANCE_MODE" = frugal ]; then
        _tce=$(readlink /etc/sysconfig/tcedir)
        echo "${_tce%/*}"
    else
        echo ""
    fi
}

remove_machine_state() {
    for _dir in $STATE_DIRS; do
        empty_dir "$_dir"
    done
    say "emptied $STATE_DIRS"
    rm -f /usr/local/etc/ssh/*host*key*
    if [ "$APPLIANCE_MODE" = frugal ]; then
        rm -f "$DISK/appliance-state/ssh/"*
    fi
    say "removed the SSH host keys"
    rm -f /var/lib/udhcpc/* /var/lib/dhcp/* /var/db/dhcpcd* 2>/dev/null || true
    rm -f /home/tc/.ash_history /home/tc/.bash_history /root/.ash_history /root/.bash_history
}

# The build key out; the recipe's key (install-to-disk.sh kept it aside) back in.
remove_build_key() {
    if [ "$APPLIANCE_MODE" = frugal ]; then
        if [ -f "$DISK/appliance-state/mydata.recipe.tgz" ]; then
            mv "$DISK/appliance-state/mydata.recipe.tgz" "$DISK/tce/mydata.tgz"
        else
            rm -f "$DISK/tce/mydata.tgz"
        fi
    elif [ -f "$RECORD/authorized_keys.recipe" ]; then
        mv "$RECORD/authorized_keys.recipe" /home/tc/.ssh/authorized_keys
    else
        rm -f /home/tc/.ssh/authorized_keys
    fi
    say "removed the build's SSH key"
}

truncate_logs() {
    find /var/log -type f -exec sh -c ': >"$1"' _ {} \; 2>/dev/null || true
    if [ "$APPLIANCE_MODE" = frugal ]; then
        find "$DISK/appliance-state" -name '*.log' -type f -exec rm -f {} + 2>/dev/null || true
    fi
}

# The mount point of the disk the build wrote: / (traditional) or the tce disk (frugal).
disk_mount() {
    echo "${DISK:-/}"
}

# The block device under a mount point, by its /proc/mounts line.
device_of() {
    awk -v m="$1" '$2 == m && $1 ~ /^\/dev\// { d = $1 } END { print d }' /proc/mounts
}

# True when the disk passes discards down (QEMU: disk_discard = "unmap" on a bus that has
# them; IDE has TRIM). A partition's queue is its disk's: /sys/class/block/sda1/../queue.
can_discard() {
    _dev=$(device_of "$(disk_mount)")
    _sys=/sys/class/block/${_dev#/dev/}
    [ -n "$_dev" ] && [ -e "$_sys" ] || return 1
    _max=$(cat "$_sys/queue/discard_max_bytes" 2>/dev/null ||
        cat "$_sys/../queue/discard_max_bytes" 2>/dev/null)
    [ "${_max:-0}" -gt 0 ]
}

# Discard instead of zero-fill (tc11's busybox has no fstrim): with the disk mounted with
# -o discard, every block the cleanup frees is unmapped from the qcow2 as it is freed. What
# the install wrote and deleted was discarded then (install-to-disk.sh mounts with it too).
# Returns false where the disk cannot: the zero-fill below is the fallback.
discard_from_now() {
    DISCARDING=no
    can_discard || return 1
    mount -o remount,discard "$(disk_mount)" 2>/dev/null || return 1
    DISCARDING=yes
}

# Zeros compress to nothing in the qcow2 (dd stops with "no space left", which is the point).
# Under TCG it writes the whole free space (15-19 s a 2 GiB disk): only without discard.
zero_free_space() {
    _fill=${DISK:-}/appliance-zero.fill
    dd if=/dev/zero of="$_fill" bs=1M 2>/dev/null || true
    sync
    rm -f "$_fill"
    sync
    say "zeroed the free space of ${DISK:-/}"
}

main() {
    [ "$(id -u)" -eq 0 ] || { echo "cleanup: ERROR: run as root" >&2; exit 1; }
    DISK=$(disk_root)
    stop_services
    discard_from_now || true
    remove_machine_state
    truncate_logs
    remove_build_key
    if [ "$DISCARDING" = yes ]; then
        sync
        say "freed blocks of $(disk_mount) discarded as they were freed; no zero-fill"
    else
        zero_free_space
    fi
}

main "$@"
