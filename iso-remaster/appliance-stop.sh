#!/bin/sh
# /opt/appliance-stop.sh of tc-appliance (iso-remaster/appliance-stop.sh, in boot/appliance.gz).
#
# Stops the appliance's services cleanly, then (with an argument) powers off or reboots.
# Tiny Core's shutdown never calls a service's stop: rc.shutdown only syncs, sends every
# process TERM, waits 2 s and sends KILL (tinycorelinux/Core-scripts etc/init.d/rc.shutdown
# @ 0ed6e60), too short for containerd and faasd to stop their containers. So every power-off
# and reboot the appliance makes goes through here: the ACPI power button (acpid.tcz, event
# file /usr/local/etc/acpi/events/power-button), Packer's shutdown_command and its reboot
# step, and packer/scripts/cleanup.sh (without an argument).
#
#   appliance-stop.sh [poweroff|reboot]
#
# Services of /etc/sysconfig/appliance/services are stopped in reverse order, each with its
# init script's `stop`, bounded by APPLIANCE_STOP_TIMEOUT seconds; one line per service on
# /dev/console (the serial port), also in /var/log/appliance-boot.log:
#   APPLIANCE-STOP <service> ok|timeout|failed
# A service whose init script is not loaded (the live ISO) is skipped. Runs as root.
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# Tests point these elsewhere; in the appliance they are the defaults.
: "${APPLIANCE_CONF:=/etc/sysconfig/appliance}"
: "${APPLIANCE_LOG:=/var/log/appliance-boot.log}"
: "${APPLIANCE_INITD:=/usr/local/etc/init.d}"
: "${APPLIANCE_CONSOLE:=/dev/console}"
: "${APPLIANCE_STOP_TIMEOUT:=90}"
: "${APPLIANCE_LOCK:=/tmp/appliance-stop.lock}"
: "${APPLIANCE_POWER:=/sbin}"
: "${APPLIANCE_BOOT_ID:=/proc/sys/kernel/random/boot_id}"

log() {
    echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') appliance-stop: $*" >> "$APPLIANCE_LOG" 2>/dev/null
}

marker() {
    echo "$1" >> "$APPLIANCE_CONSOLE" 2>/dev/null
    log "$1"
}

# The services file, one plain name a line, last first.
reversed_services() {
    grep -E '^[A-Za-z0-9][A-Za-z0-9._+-]*$' "$APPLIANCE_CONF/services" 2>/dev/null |
        sed -n '1!G;h;$p'
}

# stop_one SERVICE: its init script's stop under busybox timeout (tc11's busybox has the
# `timeout SECS PROG` form), which sends TERM when the time is up.
stop_one() {
    _init=$APPLIANCE_INITD/$1
    if [ ! -x "$_init" ]; then
        log "$1 is not loaded; nothing to stop"
        return 0
    fi
    _start=$(cut -d. -f1 /proc/uptime)
    timeout "$APPLIANCE_STOP_TIMEOUT" "$_init" stop >> "$APPLIANCE_LOG" 2>&1
    _rc=$?
    _took=$(($(cut -d. -f1 /proc/uptime) - _start))
    if [ "$_rc" -eq 0 ]; then
        marker "APPLIANCE-STOP $1 ok"
    elif [ "$_took" -ge "$APPLIANCE_STOP_TIMEOUT" ]; then
        marker "APPLIANCE-STOP $1 timeout"
    else
        marker "APPLIANCE-STOP $1 failed"
    fi
}

case "${1:-}" in
    "" | poweroff | reboot) ;;
    *) echo "usage: $0 [poweroff|reboot]" >&2; exit 2 ;;
esac

boot_id() {
    cat "$APPLIANCE_BOOT_ID" 2>/dev/null
}

# take_lock: true unless another stop of this boot is still running. The lock outlives a
# power-off where /tmp is on the disk (a traditional install), so it names its boot and pid.
take_lock() {
    if ! mkdir "$APPLIANCE_LOCK" 2>/dev/null; then
        # acpid2 gets one press twice (input layer and netlink): an owner not yet written
        # is a stop that has just started
        read -r _boot _pid < "$APPLIANCE_LOCK/owner" 2>/dev/null
        if [ -z "$_boot" ] || { [ "$_boot" = "$(boot_id)" ] && kill -0 "$_pid" 2>/dev/null; }; then
            return 1
        fi
        # acpid2 runs its actions one after the other: the second event of that press comes
        # once the first stop has handed over to poweroff, whose pid is gone by then
        if [ "$_boot" = "$(boot_id)" ] && [ -e "$APPLIANCE_LOCK/requested" ]; then
            return 1
        fi
        log "a stale lock (boot ${_boot:-?}, pid ${_pid:-?}) taken over"
    fi
    echo "$(boot_id) $$" > "$APPLIANCE_LOCK/owner"
}

# A second power-button press while the first stop runs must not cut it short.
if ! take_lock; then
    log "a stop is already running; ${1:-nothing} left to it"
    exit 0
fi
log "stopping services before ${1:-nothing else}"
for _svc in $(reversed_services); do
    stop_one "$_svc"
done
sync
if [ -z "${1:-}" ]; then
    rm -rf "$APPLIANCE_LOCK"
    exit 0
fi
echo "$1" > "$APPLIANCE_LOCK/requested"
exec "$APPLIANCE_POWER/$1"
