#!/bin/sh
# /opt/bootsync.sh of tc-appliance (iso-remaster/bootsync.sh, laid into boot/appliance.gz).
#
# tc-config runs it as root at the end of every boot and waits for it: after the extensions
# are loaded and the backup (mydata.tgz) is restored. It sets the host name and, once, the
# tc password hash (both from /etc/sysconfig/appliance, written by the remaster from the
# recipe), then starts two jobs in the background side by side: the SSH server (host keys
# are made at the first boot of each machine, once the services are up, and kept in
# /usr/local/etc/ssh) and /opt/bootlocal.sh (services and the APPLIANCE-* marker). On a frugal install (/ is a tmpfs, the tce directory on the
# disk holds appliance-state/, made by packer/scripts/install-to-disk.sh) it first binds
# containerd's and faasd's state from the disk and brings back the SSH host keys, so what
# the services write survives a reboot. No `set -e`: a boot script must get to its end whatever
# fails on the way; failures are logged to /var/log/appliance-boot.log.
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# Tests point these elsewhere; at boot they are the defaults.
: "${APPLIANCE_CONF:=/etc/sysconfig/appliance}"
: "${APPLIANCE_LOG:=/var/log/appliance-boot.log}"
: "${APPLIANCE_SSH_DIR:=/usr/local/etc/ssh}"
: "${APPLIANCE_INITD:=/usr/local/etc/init.d}"
: "${APPLIANCE_SHADOW:=/etc/shadow}"
: "${APPLIANCE_SETHOSTNAME:=/usr/bin/sethostname}"
: "${APPLIANCE_BOOTLOCAL:=/opt/bootlocal.sh}"
: "${APPLIANCE_ACPID:=/usr/local/sbin/acpid}"
: "${APPLIANCE_ACPI_EVENTS:=/usr/local/etc/acpi/events}"
: "${APPLIANCE_TCEDIR_LINK:=/etc/sysconfig/tcedir}"
: "${APPLIANCE_ROOT:=}"
: "${APPLIANCE_CONSOLE:=/dev/console}"
: "${APPLIANCE_PROC:=/proc}"
: "${APPLIANCE_SERVICES_DONE:=/var/run/appliance-services.done}"  # bootlocal.sh's marker()
: "${APPLIANCE_SSH_WAIT:=120}"
STATE_DIRS="var/lib/containerd var/lib/faasd var/lib/faasd-provider var/lib/appliance"
NL='
'

log() {
    echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') bootsync: $*" >> "$APPLIANCE_LOG"
}

# The boot timeline: `APPLIANCE-PHASE <name> <seconds since boot> [<detail>]` on the console
# and in the log (test-image and `make bench` read it). Best effort: never stops the boot.
phase_at() {
    [ -n "$2" ] || return 0
    _line="APPLIANCE-PHASE $1 $2${3:+ $3}"
    { echo "$_line" >> "$APPLIANCE_CONSOLE"; } 2>/dev/null  # >>: a file in tests
    { echo "$_line" >> "$APPLIANCE_LOG"; } 2>/dev/null
    return 0
}

uptime_s() {
    cut -d' ' -f1 "$APPLIANCE_PROC/uptime" 2>/dev/null
}

# When the kernel started /init: pid 1's start time (field 22 of /proc/1/stat, in clock
# ticks; USER_HZ is 100 on x86). Fields are counted after the ") " closing its name.
kernel_s() {
    sed 's/^.*) //' "$APPLIANCE_PROC/1/stat" 2>/dev/null |
        awk 'NF >= 20 && $20 ~ /^[0-9]+$/ { printf "%.2f\n", $20 / 100 }'
}

set_hostname() {
    _name=$(cat "$APPLIANCE_CONF/hostname" 2>/dev/null)
    case "$_name" in
        "" | *[!A-Za-z0-9.-]*) _name=box ;;  # Tiny Core's default
    esac
    "$APPLIANCE_SETHOSTNAME" "$_name"
}

# tc's password field in the shadow file becomes $1.
set_tc_shadow() {
    if ! grep -q '^tc:' "$APPLIANCE_SHADOW"; then
        log "no user tc in $APPLIANCE_SHADOW; password not changed"
        return 1
    fi
    _new=$APPLIANCE_SHADOW.appliance
    # cat > keeps the owner and mode of the shadow file
    # the hash through the environment: an argument would show in every `ps` listing
    if (umask 077 && TC_HASH=$1 awk -F: -v OFS=: '$1 == "tc" { $2 = ENVIRON["TC_HASH"] } { print }' \
            "$APPLIANCE_SHADOW" > "$_new") && cat "$_new" > "$APPLIANCE_SHADOW"; then
        rm -f "$_new"
        return 0
    fi
    rm -f "$_new"
    log "could not change the password of tc"
    return 1
}

# The recipe's SHA-512 crypt hash for tc, applied once and then removed, so a password
# changed later on an installed system is not reset at the next boot. Without one, tc would
# keep Tiny Core's well-known password "tcuser" (tinycorelinux/Core-scripts
# etc/init.d/tc-config @ 0ed6e60, addUser: `echo "$USER":tcuser | chpasswd -m`), and a
# console login prompt (noautologin) would stop nobody: the password is locked instead, as
# "*" (matches no password; not "!", which OpenSSH takes as a locked account and then
# refuses keys too). Once per machine: tc_password_done stays on a traditional install; on
# a frugal one tc-config makes tc afresh at every boot, and so does this.
set_password_hash() {
    _file=$APPLIANCE_CONF/tc_password_hash
    _done=$APPLIANCE_CONF/tc_password_done
    if [ -s "$_file" ]; then
        _hash=$(cat "$_file")
        case "$_hash" in
            \$6\$*) ;;
            *) log "ignored $_file: not a SHA-512 crypt hash"; _hash= ;;
        esac
        case "$_hash" in
            *[!A-Za-z0-9./=\$]*) log "ignored $_file: unexpected characters"; _hash= ;;
        esac
        if [ -n "$_hash" ] && set_tc_shadow "$_hash"; then
            rm -f "$_file"
            : > "$_done"
            log "password hash for tc set"
            return 0
        fi
    fi
    [ -e "$_done" ] && return 0
    if set_tc_shadow '*'; then
        : > "$_done"
        log "password of tc locked (no tc_password_hash): console logins refused"
    fi
}

# sshd_config from Tiny Core's sshd_config.orig on the first start, key-only: QEMU's (and
# Packer's) port forward may listen on every interface of the build host.
ssh_config() {
    [ -f "$APPLIANCE_SSH_DIR/sshd_config.orig" ] || return 0
    [ -f "$APPLIANCE_SSH_DIR/sshd_config" ] && return 0
    {
        echo "# tc-appliance (bootsync.sh): keys only; the first value of a keyword wins"
        echo "PasswordAuthentication no"
        echo "ChallengeResponseAuthentication no"
        echo "PermitRootLogin no"
        cat "$APPLIANCE_SSH_DIR/sshd_config.orig"
    } > "$APPLIANCE_SSH_DIR/sshd_config"
}

# Host keys for OpenSSH if this machine has none yet (dropbear's init script makes its own).
host_keys() {
    command -v ssh-keygen >/dev/null 2>&1 || return 0
    for _type in ed25519 ecdsa; do
        _key=$APPLIANCE_SSH_DIR/ssh_host_${_type}_key
        [ -s "$_key" ] && continue
        ssh-keygen -q -t "$_type" -N "" -f "$_key" >> "$APPLIANCE_LOG" 2>&1 &&
            log "made SSH host key $_key"
    done
}

# appliance-state/ beside the tce directory, on a frugal install only.
state_dir() {
    _tce=$(readlink "$APPLIANCE_TCEDIR_LINK" 2>/dev/null) || return 1
    [ -d "${_tce%/*}/appliance-state" ] || return 1
    echo "${_tce%/*}/appliance-state"
}

# Before any service starts (bootlocal.sh starts them after this script). One read of
# /proc/mounts, one mkdir and one date for all the folders: every command started costs
# the boot tens of milliseconds under TCG (a command per folder and step cost 0.3 s).
bind_state() {
    _state=$1
    _mounts=$(awk '{ print $2 }' /proc/mounts)
    _dirs=""
    for _dir in $STATE_DIRS; do
        _dirs="$_dirs $_state/$_dir $APPLIANCE_ROOT/$_dir"
    done
    # shellcheck disable=SC2086 # one word per folder
    mkdir -p $_dirs
    _stamp=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
    for _dir in $STATE_DIRS; do
        _target=$APPLIANCE_ROOT/$_dir
        case "$NL$_mounts$NL" in
            *"$NL$_target$NL"*) continue ;;  # bound already
        esac
        if mount --bind "$_state/$_dir" "$_target"; then
            _said="$_target is kept on the disk ($_state/$_dir)"
        else
            _said="could not bind $_state/$_dir on $_target: its state will not survive a reboot"
        fi
        echo "$_stamp bootsync: $_said" >> "$APPLIANCE_LOG"
    done
}

# SSH host keys: back from the disk before the server starts, onto it after (first boot).
# Copies, not a bind: the key folder also holds the extension's own files.
host_keys_from() {
    mkdir -p "$1/ssh" "$APPLIANCE_SSH_DIR"
    for _key in "$1"/ssh/*host*key*; do
        [ -f "$_key" ] && cp -p "$_key" "$APPLIANCE_SSH_DIR/"
    done
    return 0
}

host_keys_to() {
    for _key in "$APPLIANCE_SSH_DIR"/*host*key*; do
        [ -f "$_key" ] && [ ! -f "$1/ssh/${_key##*/}" ] && cp -p "$_key" "$1/ssh/"
    done
    return 0
}

# True once this machine has SSH host keys (any boot but its first).
has_host_keys() {
    for _key in "$APPLIANCE_SSH_DIR"/*host*key*; do
        [ -f "$_key" ] && return 0
    done
    return 1
}

# Until bootlocal.sh has printed its marker (READY, NOT-READY or LIVE: marker() leaves
# APPLIANCE_SERVICES_DONE), at most APPLIANCE_SSH_WAIT seconds. Off the services' path: a
# poll once a second costs them nothing and SSH at most a second.
wait_for_services() {
    _waited=0
    while [ ! -e "$APPLIANCE_SERVICES_DONE" ] && [ "$_waited" -lt "$APPLIANCE_SSH_WAIT" ]; do
        sleep 1
        _waited=$((_waited + 1))
    done
}

start_ssh() {
    _init=$APPLIANCE_INITD/openssh
    if [ ! -x "$_init" ]; then
        log "no SSH server: $_init is not loaded"
        return 1
    fi
    mkdir -p "$APPLIANCE_SSH_DIR"
    ssh_config
    host_keys
    if "$_init" start >> "$APPLIANCE_LOG" 2>&1; then
        log "SSH server started"
    else
        log "SSH server did not start"
        return 1
    fi
}

# The power button (a hypervisor's "shut down") through acpid.tcz's acpid2 and the rule
# in /usr/local/etc/acpi/events/power-button (/opt/appliance-stop.sh poweroff). Tiny Core's
# busybox has no acpid (oVirt/ovirt-tinycore-linux busybox-1.34.1_config_* @ 9d9ab19). The
# rule folder is given with -c: builds of acpid2 differ in their compiled-in default.
start_acpid() {
    if [ ! -x "$APPLIANCE_ACPID" ]; then
        log "no acpid ($APPLIANCE_ACPID: acpid.tcz is not loaded): the power button will do nothing"
        return 0
    fi
    if "$APPLIANCE_ACPID" -c "$APPLIANCE_ACPI_EVENTS" >> "$APPLIANCE_LOG" 2>&1; then
        log "acpid started (the power button powers off)"
    else
        log "acpid did not start: the power button will do nothing"
    fi
}

# tc-config runs this once the extensions are loaded and the backup is restored.
phase_at kernel "$(kernel_s)"
phase_at extensions "$(uptime_s)"
log "boot codes: $(cat /proc/cmdline 2>/dev/null)"
set_hostname
set_password_hash
start_acpid
# The SSH server beside the services, not before them, and at a machine's first boot after
# them: making host keys (Tiny Core's openssh.tcz makes RSA ones too) takes seconds to tens
# of seconds under TCG, on the one vCPU the services need, and nothing they do waits for
# SSH. With the keys there (a later boot) the server starts at once.
ssh_job() {
    [ -n "$1" ] && host_keys_from "$1"
    if ! has_host_keys; then
        log "no SSH host keys yet (a first boot): the SSH server starts after the services"
        wait_for_services
    fi
    start_ssh
    [ -n "$1" ] && host_keys_to "$1"
    log "SSH job done"
}

if STATE=$(state_dir); then
    bind_state "$STATE"
else
    STATE=
fi
phase_at bootsync "$(uptime_s)"
rm -f "$APPLIANCE_SERVICES_DONE"  # a traditional install's /var/run is on the disk
ssh_job "$STATE" &
"$APPLIANCE_BOOTLOCAL" &
