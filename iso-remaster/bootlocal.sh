#!/bin/sh
# /opt/bootlocal.sh of tc-appliance (iso-remaster/bootlocal.sh, laid into boot/appliance.gz).
#
# Started in the background by /opt/bootsync.sh. It runs one background job: for each
# service of /etc/sysconfig/appliance/services (the recipe's `services`, in order) whose
# /usr/local/etc/init.d/<service> exists, `start` then `status`, all within ready_timeout
# seconds (/etc/sysconfig/appliance/ready_timeout); then it prints on /dev/console (the
# serial port: the last console= of the boot line) exactly one marker line:
#   APPLIANCE-READY                 every loaded service started and reports healthy
#   APPLIANCE-NOT-READY <service>   that service failed to start, was unhealthy, or ran
#                                   out of time (services after it are not started)
#   APPLIANCE-LIVE                  no service is loaded: the live ISO, which only installs
#   APPLIANCE-NOT-READY root-on-initramfs
#                                   services are loaded but / is the initramfs rootfs,
#                                   where runc's pivot_root fails: the install is broken
# Everything goes to /var/log/appliance-boot.log as well.
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# Tests point these elsewhere; at boot they are the defaults.
: "${APPLIANCE_CONF:=/etc/sysconfig/appliance}"
: "${APPLIANCE_LOG:=/var/log/appliance-boot.log}"
: "${APPLIANCE_INITD:=/usr/local/etc/init.d}"
: "${APPLIANCE_CONSOLE:=/dev/console}"
: "${APPLIANCE_MOUNTS:=/proc/mounts}"
: "${APPLIANCE_FIRSTBOOT:=/opt/firstboot.sh}"
: "${APPLIANCE_PROC:=/proc}"
: "${APPLIANCE_SERVICES_DONE:=/var/run/appliance-services.done}"  # bootsync.sh's SSH job
# The services' init scripts print their APPLIANCE-PHASE lines only when started from here.
APPLIANCE_PHASES=1
export APPLIANCE_PHASES APPLIANCE_CONSOLE APPLIANCE_LOG APPLIANCE_PROC
DEFAULT_TIMEOUT=600

log() {
    echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') bootlocal: $*" >> "$APPLIANCE_LOG"
}

# The marker line, then the file a first boot's SSH job waits for (bootsync.sh).
marker() {
    echo "$1" > "$APPLIANCE_CONSOLE" 2>/dev/null
    log "$1"
    : > "$APPLIANCE_SERVICES_DONE" 2>/dev/null
}

# The boot timeline's last line (format as in bootsync.sh); best effort.
phase() {
    _up=""
    { read -r _up _rest < "$APPLIANCE_PROC/uptime"; } 2>/dev/null
    _line="APPLIANCE-PHASE $1 $_up"
    { echo "$_line" >> "$APPLIANCE_CONSOLE"; } 2>/dev/null  # >>: a file in tests
    { echo "$_line" >> "$APPLIANCE_LOG"; } 2>/dev/null
    return 0
}

# Seconds since boot: a clock that NTP or DHCP cannot move. Read by the shell itself: each
# command started costs the boot tens of milliseconds under TCG.
now() {
    read -r _up _rest < /proc/uptime
    echo "${_up%%.*}"
}

ready_timeout() {
    _t=""
    { read -r _t < "$APPLIANCE_CONF/ready_timeout"; } 2>/dev/null
    case "$_t" in
        "" | *[!0-9]*) echo "$DEFAULT_TIMEOUT" ;;
        *) echo "$_t" ;;
    esac
}

# The services file, one name a line; anything that is not a plain name is skipped.
services() {
    grep -E '^[A-Za-z0-9][A-Za-z0-9._+-]*$' "$APPLIANCE_CONF/services" 2>/dev/null
}

# kill_tree PID: PID and every process below it (busybox may have no pkill).
kill_tree() {
    _todo=$1
    _all=""
    while [ -n "$_todo" ]; do
        _all="$_all $_todo"
        _next=""
        for _stat in /proc/[0-9]*/stat; do
            # field 4 is the parent; the command name before it may contain blanks
            _parent=$(sed 's/^.*) [A-Za-z] \([0-9]*\) .*$/\1/' "$_stat" 2>/dev/null)
            [ -n "$_parent" ] || continue
            case " $_todo " in
                *" $_parent "*) _child=${_stat%/stat}; _next="$_next ${_child#/proc/}" ;;
            esac
        done
        _todo=${_next# }
    done
    # shellcheck disable=SC2086 # one argument per pid
    kill $_all 2>/dev/null
}

# within SECONDS COMMAND...: COMMAND's exit status, or 124 once it has run SECONDS
# (it and its children are then stopped). Its output goes to the log. It returns the
# moment COMMAND ends: a watchdog in the background does the timing (polling once a
# second cost the boot up to a second per call).
within() {
    _left=$1
    shift
    _flag=${TMPDIR:-/tmp}/appliance-within.$$
    rm -f "$_flag"
    ("$@" >> "$APPLIANCE_LOG" 2>&1) &
    _pid=$!
    # the trap ends the watchdog (and its sleep) at once when the command was in time
    (
        sleep "$_left" &
        _sleep=$!
        trap 'kill "$_sleep" 2>/dev/null; exit 0' TERM
        wait "$_sleep"
        : > "$_flag"
        kill_tree "$_pid"
    ) &
    _dog=$!
    wait "$_pid"
    _rc=$?
    kill "$_dog" 2>/dev/null
    wait "$_dog" 2>/dev/null
    if [ -e "$_flag" ]; then
        rm -f "$_flag"
        log "$* did not finish in time; stopped"
        return 124
    fi
    return "$_rc"
}

services_job() {
    "$APPLIANCE_FIRSTBOOT"
    phase firstboot
    _deadline=$(($(now) + $(ready_timeout)))
    _loaded=""
    for _svc in $(services); do
        if [ -x "$APPLIANCE_INITD/$_svc" ]; then
            _loaded="$_loaded $_svc"
        else
            log "$_svc: $APPLIANCE_INITD/$_svc is not loaded; skipped"
        fi
    done
    if [ -z "$_loaded" ]; then
        marker "APPLIANCE-LIVE"
        return 0
    fi
    # Containers never run on the initramfs: / must be the disk (traditional) or the tmpfs
    # that noembed switch_roots to (frugal). test-image reads this marker.
    if [ "$(awk '$2 == "/" { t = $3 } END { print t }' "$APPLIANCE_MOUNTS")" = "rootfs" ]; then
        marker "APPLIANCE-NOT-READY root-on-initramfs"
        return 1
    fi
    for _svc in $_loaded; do
        for _action in start status; do
            log "$_svc $_action"
            if ! within $((_deadline - $(now))) "$APPLIANCE_INITD/$_svc" "$_action"; then
                marker "APPLIANCE-NOT-READY $_svc"
                return 1
            fi
        done
    done
    phase ready
    marker "APPLIANCE-READY"
}

services_job &
