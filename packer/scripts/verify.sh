#!/bin/sh
# verify.sh of tc-appliance: runs as root (through Packer) on the installed system after the
# reboot and proves that it is an appliance, not just a booted disk. It prints one verdict
# line on stdout, which Packer passes on and the packer stage reads (docs/architecture.md#markers):
#   APPLIANCE-VERIFY: PASS
#   APPLIANCE-VERIFY: FAIL <reason>      (and exits 1, which fails the Packer build)
#
# Input, from the packer stage's environment: APPLIANCE_MODE (traditional|frugal),
# APPLIANCE_READY_TIMEOUT (the recipe's ready_timeout), APPLIANCE_GATEWAY (faasd's health URL).
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

: "${APPLIANCE_MODE:=traditional}"
: "${APPLIANCE_READY_TIMEOUT:=600}"
: "${APPLIANCE_GATEWAY:=http://127.0.0.1:8080/healthz}"
: "${APPLIANCE_BOOT_LOG:=/var/log/appliance-boot.log}"

RECORD=/usr/local/share/tc-appliance
IMAGES=/usr/local/share/faasd/images
NAMESPACE=openfaas
CNI_CONF=/etc/cni/net.d
VERIFY_CONF=$CNI_CONF/90-appliance-verify.conflist
CTR_TIMEOUT=300

say() {
    echo "verify: $*"
}

fail() {
    [ -f "$APPLIANCE_BOOT_LOG" ] && tail -n 20 "$APPLIANCE_BOOT_LOG" | sed 's/^/verify: boot log: /'
    echo "APPLIANCE-VERIFY: FAIL $*"
    exit 1
}

# within SECONDS COMMAND...: busybox's timeout when there is one (a hung runc must not hang
# the build until Packer's own timeout).
within() {
    _seconds=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$_seconds" "$@"
    else
        "$@"
    fi
}

root_fstype() {
    awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts
}

check_root() {
    _type=$(root_fstype)
    case "$APPLIANCE_MODE:$_type" in
        traditional:ext4 | traditional:ext2 | traditional:ext3) ;;
        frugal:tmpfs) ;;
        *:rootfs) fail "/ is the initramfs rootfs (runc's pivot_root cannot work there)" ;;
        *) fail "/ is $_type, not what a $APPLIANCE_MODE install boots into" ;;
    esac
    say "/ is $_type ($APPLIANCE_MODE install)"
}

# Every loop device's backing file: a .tcz mounted from the CD means the install did not
# take (the CD stays attached during the Packer build).
check_not_from_cd() {
    for _backing in /sys/block/loop*/loop/backing_file; do
        [ -f "$_backing" ] || continue
        case "$(cat "$_backing")" in
            /mnt/sr* | /mnt/cdrom*) fail "$(cat "$_backing") is loaded from the CD" ;;
        esac
    done
}

check_traditional_extensions() {
    [ -s "$RECORD/extensions.lst" ] || fail "$RECORD/extensions.lst is missing: not installed by install-to-disk.sh"
    if grep -q ' /tmp/tcloop/' /proc/mounts; then
        fail "extensions are loop-mounted under /tmp/tcloop: the traditional root must not need them"
    fi
    while read -r _tcz; do
        _list=$RECORD/installed/${_tcz%.tcz}.list
        [ -f "$_list" ] || fail "$_tcz: no file list ($_list)"
        while read -r _path; do
            _path=${_path#.}
            [ -e "$_path" ] || [ -L "$_path" ] || fail "$_tcz: $_path is missing from the root"
        done <"$_list"
    done <"$RECORD/extensions.lst"
    say "$(wc -l <"$RECORD/extensions.lst") extensions unpacked in the root"
}

# tcz_has_files TCZ: whether the squashfs holds any file. tce-load unmounts an extension
# without files (a meta-extension such as original-modules-KERNEL, which only carries a .dep;
# tinycorelinux/Core-scripts usr/bin/tce-load @ 0ed6e60), so such a one is never mounted.
tcz_has_files() {
    _probe=/tmp/verify-probe
    mkdir -p "$_probe"
    mount -t squashfs -o loop,ro "$1" "$_probe" || fail "cannot mount $1 to look inside it"
    _file=$(find "$_probe" ! -type d | head -n 1)
    umount -d "$_probe"
    rmdir "$_probe"
    [ -n "$_file" ]
}

check_frugal_extensions() {
    _tce=$(readlink /etc/sysconfig/tcedir 2>/dev/null) || fail "no tce directory (/etc/sysconfig/tcedir)"
    case "$_tce" in
        /mnt/sr*) fail "the tce directory $_tce is on the CD" ;;
        /tmp/*) fail "the tce directory is $_tce: tce=sda1 was not used" ;;
    esac
    [ -s "$_tce/onboot.lst" ] || fail "$_tce/onboot.lst is missing"
    while read -r _tcz; do
        _name=${_tcz%.tcz}
        if ! grep -q " /tmp/tcloop/$_name " /proc/mounts; then
            tcz_has_files "$_tce/optional/$_tcz" || continue
            fail "$_tcz is not loaded"
        fi
        _from=""
        for _backing in /sys/block/loop*/loop/backing_file; do
            [ "$(cat "$_backing" 2>/dev/null)" = "$_tce/optional/$_tcz" ] && _from=$_backing
        done
        [ -n "$_from" ] || fail "$_tcz is not loaded from $_tce/optional"
    done <"$_tce/onboot.lst"
    say "$(wc -l <"$_tce/onboot.lst") extensions loaded from $_tce/optional"
}

# Frugal: what containerd and faasd write must land on the disk (bootsync.sh binds it),
# not in the tmpfs root, or a reboot loses it.
check_frugal_state() {
    for _dir in /var/lib/containerd /var/lib/faasd /var/lib/faasd-provider; do
        _on=$(awk -v d="$_dir" '$2 == d { print $1 " " $3 }' /proc/mounts | tail -n 1)
        case "$_on" in
            /dev/*" ext"[234]) say "$_dir is on the disk (${_on%% *})" ;;
            "") fail "$_dir is not bound to the disk: its state would be lost at a reboot" ;;
            *) fail "$_dir is on ${_on}, not on the disk" ;;
        esac
    done
}

check_cgroups() {
    _mounted=$(awk '$3 == "cgroup" || $3 == "cgroup2" { n++ } END { print n + 0 }' /proc/mounts)
    [ "$_mounted" -gt 0 ] || fail "no cgroup file system is mounted (containerd: no cgroup mount found in mountinfo)"
    say "$_mounted cgroup mounts"
}

# bootlocal.sh's verdict (services started in order within ready_timeout).
wait_for_services() {
    _waited=0
    _limit=$((APPLIANCE_READY_TIMEOUT + 60))
    while [ "$_waited" -lt "$_limit" ]; do
        if grep -q 'APPLIANCE-NOT-READY' "$APPLIANCE_BOOT_LOG" 2>/dev/null; then
            fail "$(grep -o 'APPLIANCE-NOT-READY.*' "$APPLIANCE_BOOT_LOG" | tail -n 1)"
        fi
        if grep -q 'APPLIANCE-READY' "$APPLIANCE_BOOT_LOG" 2>/dev/null; then
            say "services ready after the boot (APPLIANCE-READY)"
            return 0
        fi
        sleep 2
        _waited=$((_waited + 2))
    done
    fail "no APPLIANCE-READY in $APPLIANCE_BOOT_LOG within ${_limit} s"
}

check_ctr() {
    _version=$(within 60 ctr version 2>&1) || fail "ctr version: $(echo "$_version" | tail -n 1)"
    say "containerd answers: $(echo "$_version" | grep -m 1 'Version' | tr -s ' ')"
}

# faasd's network when faasd wrote one; otherwise a bridge like it, removed afterwards.
ensure_cni_conf() {
    ls "$CNI_CONF"/*.conflist >/dev/null 2>&1 && return 0
    mkdir -p "$CNI_CONF"
    cat >"$VERIFY_CONF" <<'EOF'
{"cniVersion": "0.4.0", "name": "appliance-verify", "plugins": [
 {"type": "bridge", "bridge": "verify0", "isGateway": true, "ipMasq": true,
  "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
 {"type": "firewall"}]}
EOF
    say "no CNI network written by faasd; using $VERIFY_CONF"
}

# A bundled image (faasd-images.tcz) runs as a container on the CNI bridge: the first image
# that has a shell proves it; an image without /bin/sh (a scratch one) is skipped.
check_container() {
    [ -f "$IMAGES/images.lst" ] || fail "no bundled images ($IMAGES/images.lst)"
    ensure_cni_conf
    _id=appliance-verify-$$
    _ran=""
    while read -r _archive _image; do
        [ -n "$_image" ] || continue
        if ! ctr -n "$NAMESPACE" images ls -q | grep -qxF "$_image"; then
            within "$CTR_TIMEOUT" ctr -n "$NAMESPACE" images import "$IMAGES/$_archive" >/dev/null ||
                fail "cannot import $IMAGES/$_archive"
        fi
        if _out=$(within "$CTR_TIMEOUT" ctr -n "$NAMESPACE" run --rm --cni "$_image" "$_id" \
                /bin/sh -c 'test -e /sys/class/net/eth0' 2>&1); then
            _ran=$_image
            break
        fi
        case "$_out" in
            *pivot_root*) fail "runc: $(echo "$_out" | grep -o 'pivot_root[^:]*: [a-z ]*' | head -n 1)" ;;
            *"no such file"* | *"not found"*) say "$_image has no /bin/sh; trying the next image" ;;
            *) fail "ctr run $_image: $(echo "$_out" | tail -n 1)" ;;
        esac
        ctr -n "$NAMESPACE" containers rm "$_id" >/dev/null 2>&1 || true
    done <"$IMAGES/images.lst"
    rm -f "$VERIFY_CONF"
    [ -n "$_ran" ] || fail "no bundled image could run /bin/sh"
    say "a container of $_ran ran on the CNI bridge and exited 0"
}

check_gateway() {
    _tries=0
    # timeout(1), not wget -T, which crashes Debian 12's static busybox (the stand-in's)
    until _body=$(within 10 wget -q -Y off -O - "$APPLIANCE_GATEWAY" 2>/dev/null); do
        _tries=$((_tries + 1))
        [ "$_tries" -lt 30 ] || fail "faasd's gateway $APPLIANCE_GATEWAY did not answer 200"
        sleep 2
    done
    say "faasd gateway $APPLIANCE_GATEWAY: 200 ($(echo "$_body" | head -n 1))"
}

main() {
    [ "$(id -u)" -eq 0 ] || fail "run as root (Packer's execute_command uses sudo)"
    case "$APPLIANCE_MODE" in
        traditional | frugal) ;;
        *) fail "APPLIANCE_MODE=$APPLIANCE_MODE: expected traditional or frugal" ;;
    esac
    check_root
    check_not_from_cd
    "check_${APPLIANCE_MODE}_extensions"
    if [ "$APPLIANCE_MODE" = frugal ]; then
        check_frugal_state
    fi
    wait_for_services
    check_cgroups
    check_ctr
    check_container
    check_gateway
    echo "APPLIANCE-VERIFY: PASS"
}

main "$@"
