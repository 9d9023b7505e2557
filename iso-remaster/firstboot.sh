#!/bin/sh
# /opt/firstboot.sh of tc-appliance (iso-remaster/firstboot.sh, laid into boot/appliance.gz).
#
# Configures each copy of the appliance from its hypervisor, before any service starts:
# /opt/bootlocal.sh calls it first. Sources, in the order of
# /etc/sysconfig/appliance/firstboot_sources (one a line; no file = nocloud then ovf; an
# empty file = off):
#   nocloud  a NoCloud seed: a vfat or iso9660 filesystem labelled cidata/CIDATA holding
#            meta-data, user-data (#cloud-config) and optionally network-config
#   ovf      an OVF environment: ovf-env.xml on a CD (the OVF "iso" transport)
# A seed is applied once per instance-id (NoCloud) or per digest of its properties (OVF);
# the host name and the network are runtime state, re-applied from
# /var/lib/appliance/firstboot/ at every boot (tc-config resets the one and starts udhcpc),
# and so are tc's keys and password hash where / is a tmpfs (frugal) that forgets them.
# The supported settings and YAML are in iso-remaster/README.md. One line on the console:
#   APPLIANCE-FIRSTBOOT: applied SOURCE ID SETTINGS | unchanged SOURCE ID | none | off
# plus `APPLIANCE-FIRSTBOOT: ERROR ...` for each thing that could not be used. Secrets (the
# password hash, the faasd password) go from file to file through awk, never through a
# command line, a log or the console. Bounded: what can hang (blkid, mount, ifconfig, route,
# runcmd) runs under timeout. It never fails: the appliance boots as today with whatever
# could be applied.
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# Tests point these elsewhere; at boot they are the defaults.
: "${APPLIANCE_CONF:=/etc/sysconfig/appliance}"
: "${APPLIANCE_LOG:=/var/log/appliance-boot.log}"
: "${APPLIANCE_CONSOLE:=/dev/console}"
: "${APPLIANCE_FIRSTBOOT_STATE:=/var/lib/appliance/firstboot}"
: "${APPLIANCE_FIRSTBOOT_LIB:=/opt}"
: "${APPLIANCE_SEED_DIR:=}"
: "${APPLIANCE_OVF_DIR:=}"
: "${APPLIANCE_BLKID:=blkid}"
: "${APPLIANCE_MOUNT:=mount}"
: "${APPLIANCE_UMOUNT:=umount}"
: "${APPLIANCE_CDROMS:=/dev/sr0 /dev/sr1 /dev/sr2 /dev/sr3}"
: "${APPLIANCE_SHADOW:=/etc/shadow}"
: "${APPLIANCE_SETHOSTNAME:=/usr/bin/sethostname}"
: "${APPLIANCE_TC_HOME:=/home/tc}"
: "${APPLIANCE_TC_OWNER:=tc:staff}"
: "${APPLIANCE_FAASD_SECRETS:=/var/lib/faasd/secrets}"
: "${APPLIANCE_ROOT:=}"
: "${APPLIANCE_RESOLV:=/etc/resolv.conf}"
: "${APPLIANCE_SYS_NET:=/sys/class/net}"
: "${APPLIANCE_RUN:=/var/run}"
: "${APPLIANCE_IFCONFIG:=ifconfig}"
: "${APPLIANCE_ROUTE:=route}"
: "${APPLIANCE_RUNCMD_TIMEOUT:=120}"
: "${APPLIANCE_MOUNTS:=/proc/mounts}"
STATE=$APPLIANCE_FIRSTBOOT_STATE
TAB=$(printf '\t')
NL='
'
SETTINGS=""
WORK=""

log() {
    echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') firstboot: $*" >> "$APPLIANCE_LOG"
}

console() {
    echo "APPLIANCE-FIRSTBOOT: $*" >> "$APPLIANCE_CONSOLE" 2>/dev/null
    log "$*"
}

error() {
    console "ERROR $*"
}

applied() {
    SETTINGS="${SETTINGS:+$SETTINGS,}$1"
}

# The parsers print values with \ \t \n escaped (iso-remaster/yaml-subset.awk).
UNESC='function unesc(s,    r, i, c) {
    r = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\") {
            c = substr(s, ++i, 1)
            if (c == "n") c = "\n"
            else if (c == "t") c = "\t"
        }
        r = r c
    }
    return r
}'

# get FLAT PATH: the value of PATH (no newline added); status 1 if it is not there.
get() {
    awk -F "$TAB" -v p="$2" "$UNESC"'
        $1 == p { v = unesc($NF); f = 1 }
        END { printf "%s", v; exit !f }' "$1"
}

# has FLAT PATH: PATH is a scalar, or a list or mapping with something in it.
has() {
    awk -F "$TAB" -v p="$2" '$1 == p || index($1, p ".") == 1 { f = 1 } END { exit !f }' "$1"
}

# children FLAT PATH: the keys or indexes right below PATH ("" = the top), once each, in order.
children() {
    awk -F "$TAB" -v p="${2:+$2.}" '
        $1 !~ /^!/ && (p == "" || index($1, p) == 1) && length($1) > length(p) {
            k = substr($1, length(p) + 1)
            sub(/\..*$/, "", k)
            if (!(k in s)) { s[k] = 1; print k }
        }' "$1"
}

# ignore FLAT WHERE ALLOWED...: log every key below WHERE that is not ALLOWED.
ignore() {
    _flat=$1
    _where=$2
    shift 2
    for _k in $(children "$_flat" "$_where"); do
        case " $* " in
            *" $_k "*) ;;
            *) log "${_where:-top level}: $_k is not supported; ignored" ;;
        esac
    done
}

# --- finding the sources --------------------------------------------------------------------

# The sources to try, one a line; status 1 when first-boot configuration is off.
sources() {
    _file=$APPLIANCE_CONF/firstboot_sources
    if [ ! -e "$_file" ]; then
        printf 'nocloud\novf\n'
        return 0
    fi
    # read by the shell itself: every command started costs the boot tens of ms under TCG
    _list=""
    while read -r _name || [ -n "$_name" ]; do
        case $_name in
            "") ;;
            nocloud | ovf) _list="$_list$_name$NL" ;;
            *) log "$_file: unknown source $_name; ignored" ;;
        esac
    done < "$_file"
    [ -n "$_list" ] || return 1
    printf '%s' "$_list"
}

# mounted DEV DIR: DEV read-only on DIR, bounded (a dead CD drive can hang a mount).
mounted() {
    mkdir -p "$2"
    timeout 20 "$APPLIANCE_MOUNT" -r "$1" "$2" >> "$APPLIANCE_LOG" 2>&1
}

unmount() {
    timeout 20 "$APPLIANCE_UMOUNT" "$1" >> "$APPLIANCE_LOG" 2>&1
}

# copy_from DIR DEST FILE...: the FILEs that DIR has, into DEST.
copy_from() {
    _from=$1
    _dest=$2
    shift 2
    mkdir -p "$_dest"
    for _f in "$@"; do
        [ -f "$_from/$_f" ] && cp "$_from/$_f" "$_dest/$_f"
    done
    return 0
}

# One probe of every block device per run, kept in $WORK/blkid (-o export: NAME=VALUE lines,
# a blank line after each device; -c /dev/null skips blkid's cache): each probe reads every
# disk, partition, loop device and CD, about a second under TCG, and a boot without any
# seed asks three questions of it.
scan() {
    [ -e "$WORK/blkid" ] && return 0
    timeout 20 "$APPLIANCE_BLKID" -c /dev/null -o export > "$WORK/blkid" 2>/dev/null
    return 0
}

# The devices of the scan that have KEY=VALUE (e.g. LABEL=cidata).
devices() {
    scan
    awk -v want="$1" '
        /^DEVNAME=/ { dev = substr($0, 9) }
        $0 == want { hit = 1 }
        /^$/ { if (hit && dev != "") print dev; dev = ""; hit = 0 }
        END { if (hit && dev != "") print dev }' "$WORK/blkid"
}

# The CD drives to try by name: only when blkid found nothing at all (no blkid, or it failed);
# an ISO transport CD is an iso9660 filesystem, which the scan names.
cd_drives() {
    [ -s "$WORK/blkid" ] || echo "$APPLIANCE_CDROMS"
}

# find_on NAME FILE...: copies FILEs into $WORK/NAME from the first device below that has
# the first FILE. Devices: the arguments after --.
find_on() {
    _name=$1
    shift
    _files=""
    while [ "$1" != "--" ]; do
        _files="$_files $1"
        shift
    done
    shift
    _mnt=$WORK/mnt
    for _dev in "$@"; do
        [ -b "$_dev" ] || [ -f "$_dev" ] || continue
        mounted "$_dev" "$_mnt" || continue
        # shellcheck disable=SC2086 # one word per file name
        set -- $_files
        if [ -f "$_mnt/$1" ]; then
            copy_from "$_mnt" "$WORK/$_name" "$@"
            unmount "$_mnt"
            log "$_name: found on $_dev"
            return 0
        fi
        unmount "$_mnt"
    done
    return 1
}

# The NoCloud seed into $WORK/nocloud.
find_nocloud() {
    _files="meta-data user-data network-config"
    if [ -n "$APPLIANCE_SEED_DIR" ]; then
        [ -f "$APPLIANCE_SEED_DIR/meta-data" ] || return 1
        # shellcheck disable=SC2086 # one word per file name
        copy_from "$APPLIANCE_SEED_DIR" "$WORK/nocloud" $_files
        return 0
    fi
    # shellcheck disable=SC2046,SC2086 # one word per device
    find_on nocloud $_files -- $(devices LABEL=cidata; devices LABEL=CIDATA)
}

# ovf-env.xml into $WORK/ovf.
find_ovf() {
    if [ -n "$APPLIANCE_OVF_DIR" ]; then
        [ -f "$APPLIANCE_OVF_DIR/ovf-env.xml" ] || return 1
        copy_from "$APPLIANCE_OVF_DIR" "$WORK/ovf" ovf-env.xml
        return 0
    fi
    # shellcheck disable=SC2046,SC2086 # one word per device
    find_on ovf ovf-env.xml -- $(devices TYPE=iso9660) $(cd_drives)
}

# --- parsing --------------------------------------------------------------------------------

# parse_yaml FILE WHAT: FILE.flat from FILE; one ERROR line (and an empty FILE.flat) if it
# is malformed. Unsupported keys are logged.
parse_yaml() {
    if awk -f "$APPLIANCE_FIRSTBOOT_LIB/yaml-subset.awk" "$1" > "$1.flat" 2>> "$APPLIANCE_LOG"; then
        awk -F "$TAB" -v what="$2" '$1 == "!ignored" { print what ": " $2 ": ignored (" $3 ")" }' \
            "$1.flat" | while read -r _line; do log "$_line"; done
        return 0
    fi
    _why=$(awk -F "$TAB" '$1 == "!error" { print $2 }' "$1.flat")
    error "$2 ${_why:-could not be read (awk failed; see $APPLIANCE_LOG)}"
    : > "$1.flat"
    return 1
}

# The checks and conversions of the network settings: reads NAME=VALUE lines (mode, iface,
# mac, address as a.b.c.d or a.b.c.d/prefix, netmask, gateway, dns), prints them normalized,
# or one `!error WHY` line.
# shellcheck disable=SC2016 # an awk program
NET_CHECK='
function ip4(s,    n, a, i) {
    n = split(s, a, ".")
    if (n != 4) return 0
    for (i = 1; i <= 4; i++) if (a[i] !~ /^[0-9]+$/ || a[i] + 0 > 255) return 0
    return 1
}
# A table, not 256 - 2 ^ (8 - bits): busybox awk without FEATURE_AWK_LIBM (Debian'"'"'s, and
# unconfirmed for tc11) has no ^ ("Math support is not compiled in").
function mask(p,    m, i, o, bits, part) {
    split("128 192 224 240 248 252 254", part, " ")
    m = ""
    for (i = 0; i < 4; i++) {
        bits = p - 8 * i
        if (bits >= 8) o = 255
        else if (bits <= 0) o = 0
        else o = part[bits]
        m = m (i ? "." : "") o
    }
    return m
}
function fail(msg) { print "!error " msg; bad = 1; exit 1 }
{ i = index($0, "="); if (i) v[substr($0, 1, i - 1)] = substr($0, i + 1) }
END {
    if (bad) exit 1
    mode = v["mode"]
    if (mode != "static" && mode != "dhcp") fail("no static address and no DHCP")
    if (v["iface"] != "" && v["iface"] !~ /^[A-Za-z0-9_.-]+$/) fail("bad interface name")
    mac = tolower(v["mac"])
    if (mac != "" && mac !~ /^[0-9a-f][0-9a-f](:[0-9a-f][0-9a-f])(:[0-9a-f][0-9a-f])(:[0-9a-f][0-9a-f])(:[0-9a-f][0-9a-f])(:[0-9a-f][0-9a-f])$/)
        fail("bad MAC address " v["mac"])
    print "mode=" mode
    if (v["iface"] != "") print "iface=" v["iface"]
    if (mac != "") print "mac=" mac
    if (mode == "dhcp") exit 0
    a = v["address"]
    if (index(a, ":")) fail("only IPv4 is supported (address " a ")")
    nm = v["netmask"]
    if (index(a, "/")) {
        p = substr(a, index(a, "/") + 1)
        a = substr(a, 1, index(a, "/") - 1)
        if (p !~ /^[0-9]+$/ || p + 0 > 32) fail("bad prefix length /" p)
        nm = mask(p + 0)
    }
    if (!ip4(a)) fail("bad IPv4 address " a)
    if (nm == "") fail("address " a " has neither a /prefix nor a netmask")
    if (!ip4(nm)) fail("bad netmask " nm)
    if (v["gateway"] != "" && !ip4(v["gateway"])) fail("bad gateway " v["gateway"])
    n = split(v["dns"], d, /[ ,]+/)
    dns = ""
    for (i = 1; i <= n; i++) {
        if (d[i] == "") continue
        if (!ip4(d[i])) fail("bad DNS server " d[i] " (IPv4 only)")
        dns = dns (dns == "" ? "" : " ") d[i]
    }
    print "address=" a
    print "netmask=" nm
    if (v["gateway"] != "") print "gateway=" v["gateway"]
    if (dns != "") print "dns=" dns
}'

# The first interface of a network-config (version 1 or 2, with or without a top `network:`)
# as NAME=VALUE lines for NET_CHECK, or `!error WHY`.
# shellcheck disable=SC2016 # an awk program
NET_YAML='
function fail(msg) { print "!error " msg; bad = 1; exit 1 }
function true(s) { return s ~ /^(true|True|TRUE|yes|Yes|YES|on|On|ON)$/ }
function list(p,    i, r) {
    r = ""
    for (i = 0; (p "." i) in v; i++) r = r " " v[p "." i]
    return r
}
$1 !~ /^!/ {
    p = $1
    if (p ~ /^network\./) p = substr(p, 9)
    v[p] = unesc($NF)
    order[++n] = p
}
function v1(    i, t, phys, s, st) {
    phys = ""
    for (i = 0; ("config." i ".type") in v; i++) {
        t = v["config." i ".type"]
        if (t == "physical" && phys == "") phys = "config." i
        else if (t == "nameserver") dns = dns list("config." i ".address")
        else print "!ignored config entry " i " (type " t ")"
    }
    if (phys == "") fail("no interface of type physical")
    iface = v[phys ".name"]
    mac = v[phys ".mac_address"]
    s = phys ".subnets.0"
    st = v[s ".type"]
    if (st == "dhcp" || st == "dhcp4") mode = "dhcp"
    else if (st == "static" || st == "static4") {
        mode = "static"
        address = v[s ".address"]
        netmask = v[s ".netmask"]
        gateway = v[s ".gateway"]
        dns = list(s ".dns_nameservers") dns
    } else fail("subnet type \"" st "\" is not supported (static or dhcp)")
}
function v2(    i, id, b, k, matched) {
    for (i = 1; i <= n; i++)
        if (order[i] ~ /^ethernets\.[^.]+\./) {
            id = order[i]
            sub(/^ethernets\./, "", id)
            sub(/\..*$/, "", id)
            break
        }
    if (id == "") fail("no ethernets")
    b = "ethernets." id
    # `in` before any v[...] read: reading an element creates it
    matched = ((b ".match.macaddress") in v) || ((b ".match.name") in v)
    mac = v[b ".match.macaddress"]
    iface = v[b ".set-name"]
    if (iface == "" && !matched) iface = id
    if ((b ".addresses.0") in v) {
        mode = "static"
        address = v[b ".addresses.0"]
        gateway = v[b ".gateway4"]
        for (i = 0; (b ".routes." i ".to") in v; i++)
            if (v[b ".routes." i ".to"] ~ /^(default|0\.0\.0\.0\/0)$/) gateway = v[b ".routes." i ".via"]
        dns = list(b ".nameservers.addresses")
    } else if (true(v[b ".dhcp4"])) mode = "dhcp"
    else fail("interface " id " has neither addresses nor dhcp4: true")
}
END {
    if (bad) exit 1
    if (v["config"] == "disabled") { print "mode=disabled"; exit 0 }
    if (v["version"] == "1") v1()
    else if (v["version"] == "2") v2()
    else fail("version \"" v["version"] "\" is not supported (1 or 2)")
    if (bad) exit 1
    print "mode=" mode
    print "iface=" iface
    print "mac=" mac
    print "address=" address
    print "netmask=" netmask
    print "gateway=" gateway
    print "dns=" dns
}'

# plan_network RAW WHAT: $WORK/plan/network from NAME=VALUE lines, checked.
plan_network() {
    if awk "$NET_CHECK" "$1" > "$WORK/plan/network.new" 2>> "$APPLIANCE_LOG"; then
        mv "$WORK/plan/network.new" "$WORK/plan/network"
    else
        _why=$(sed -n 's/^!error //p' "$WORK/plan/network.new")
        error "$2: ${_why:-could not be checked (awk failed; see $APPLIANCE_LOG)}"
        rm -f "$WORK/plan/network.new"
    fi
}

# The host name: letters, digits, dots and dashes (what sethostname writes into /etc/hosts).
plan_hostname() {
    case "$1" in
        "") return 0 ;;
        -* | .* | *[!A-Za-z0-9.-]*) error "$2: hostname: only letters, digits, . and - are allowed" ;;
        *)
            if [ "${#1}" -gt 63 ]; then
                error "$2: hostname: longer than 63 characters"
            else
                printf '%s\n' "$1" > "$WORK/plan/hostname"
            fi
            ;;
    esac
}

# plan_key KEY WHAT: one authorized key, one line, of a known type.
plan_key() {
    case "$1" in
        *"$TAB"* | *"
"*) error "$2: an SSH key spans more than one line; ignored" ;;
        ssh-* | ecdsa-* | sk-*) printf '%s\n' "$1" >> "$WORK/plan/authorized_keys" ;;
        "") ;;
        *) error "$2: not an SSH public key (ssh-..., ecdsa-..., sk-...); ignored" ;;
    esac
}

# plan_secret FLAT PATH TARGET WHAT: the value of PATH into $WORK/plan/TARGET (file to file).
plan_secret() {
    get "$1" "$2" > "$WORK/plan/$3"
}

# The password hash in $WORK/plan/password_hash, or refused (and removed). Never printed.
check_password() {
    _f=$WORK/plan/password_hash
    [ -s "$_f" ] || { rm -f "$_f"; return 0; }
    # one line: $6$[rounds=N$]salt$hash; plain text never gets past this
    # shellcheck disable=SC2016 # a regular expression
    if [ "$(wc -l < "$_f")" -eq 0 ] &&
            grep -Eq '^\$6\$(rounds=[0-9]+\$)?[A-Za-z0-9./]{1,16}\$[A-Za-z0-9./]{86}$' "$_f"; then
        return 0
    fi
    rm -f "$_f"
    error "$1: password: not a SHA-512 crypt hash (\$6\$...); plain text is refused"
}

check_faasd_password() {
    _f=$WORK/plan/faasd_password
    [ -s "$_f" ] || { rm -f "$_f"; return 0; }
    if [ "$(wc -l < "$_f")" -eq 0 ] && ! grep -q '[[:cntrl:]]' "$_f"; then
        return 0
    fi
    rm -f "$_f"
    error "$1: faasd_password: one line of printable characters expected; refused"
}

# write_files entries, all checked before any is written: a list of the entry numbers.
plan_write_files() {
    _u=$1
    _ok=""
    for _i in $(children "$_u" write_files); do
        _e=write_files.$_i
        ignore "$_u" "$_e" path content permissions owner encoding append defer
        _path=$(get "$_u" "$_e.path")
        case "$_path" in
            /*) ;;
            *) error "user-data: write_files[$_i].path must be absolute"; return ;;
        esac
        case "$_path/" in
            */../* | */./* | *//*) error "user-data: write_files[$_i].path: no . or .. parts"; return ;;
        esac
        case "$(get "$_u" "$_e.encoding")" in
            "" | text/plain) ;;
            *) error "user-data: write_files[$_i].encoding: only plain text"; return ;;
        esac
        _mode=$(get "$_u" "$_e.permissions")
        if ! printf '%s' "${_mode:-0644}" | grep -Eq '^0?[0-7]{3,4}$'; then
            error "user-data: write_files[$_i].permissions: an octal mode like '0644'"
            return
        fi
        _owner=$(get "$_u" "$_e.owner")
        if ! printf '%s' "${_owner:-root:root}" | grep -Eq '^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$'; then
            error "user-data: write_files[$_i].owner: user or user:group"
            return
        fi
        if [ "$(get "$_u" "$_e.defer")" = true ]; then
            log "write_files[$_i]: defer is not supported; written now"
        fi
        _ok="$_ok $_i"
    done
    [ -n "$_ok" ] && echo "$_ok" > "$WORK/plan/write_files"
    return 0
}

# runcmd: every entry must be a list (argv), never a string for a shell.
plan_runcmd() {
    _u=$1
    _ok=""
    for _i in $(children "$_u" runcmd); do
        if [ -z "$(children "$_u" "runcmd.$_i")" ]; then
            error "user-data: runcmd[$_i] is not an argv list ([cmd, arg, ...]); runcmd refused"
            return
        fi
        _ok="$_ok $_i"
    done
    [ -n "$_ok" ] && echo "$_ok" > "$WORK/plan/runcmd"
    return 0
}

# The #cloud-config settings of $WORK/nocloud/user-data.flat.
plan_user_data() {
    _u=$1
    ignore "$_u" "" hostname ssh_authorized_keys users password faasd_password write_files runcmd
    _h=$(get "$_u" hostname) && plan_hostname "$_h" user-data
    for _i in $(children "$_u" ssh_authorized_keys); do
        plan_key "$(get "$_u" "ssh_authorized_keys.$_i")" "user-data: ssh_authorized_keys[$_i]"
    done
    has "$_u" password && plan_secret "$_u" password password_hash
    if [ -n "$(children "$_u" users.0)" ]; then
        ignore "$_u" users.0 name passwd ssh_authorized_keys
        _name=$(get "$_u" users.0.name)
        if [ -n "$_name" ] && [ "$_name" != tc ]; then
            log "users[0] is $_name, not the default user tc; ignored"
        else
            for _i in $(children "$_u" users.0.ssh_authorized_keys); do
                plan_key "$(get "$_u" "users.0.ssh_authorized_keys.$_i")" \
                    "user-data: users[0].ssh_authorized_keys[$_i]"
            done
            has "$_u" users.0.passwd && plan_secret "$_u" users.0.passwd password_hash
        fi
    fi
    for _i in $(children "$_u" users); do
        [ "$_i" = 0 ] || log "users[$_i]: only the default user tc (users[0]) is configured; ignored"
    done
    check_password user-data
    has "$_u" faasd_password && plan_secret "$_u" faasd_password faasd_password
    check_faasd_password user-data
    plan_write_files "$_u"
    plan_runcmd "$_u"
}

read_user_data() {
    _ud=$WORK/nocloud/user-data
    [ -s "$_ud" ] || return 0
    case "$(head -n 1 "$_ud")" in
        "#cloud-config"*)
            parse_yaml "$_ud" user-data && plan_user_data "$_ud.flat" ;;
        "#!"*) log "user-data is a script: not supported; ignored" ;;
        *) log "user-data is not #cloud-config (#include, MIME...): not supported; ignored" ;;
    esac
}

read_network_config() {
    _nc=$WORK/nocloud/network-config
    [ -s "$_nc" ] || return 0
    parse_yaml "$_nc" network-config || return 0
    awk -F "$TAB" "$UNESC$NET_YAML" "$_nc.flat" > "$_nc.raw" 2>> "$APPLIANCE_LOG"
    if grep -q '^!error ' "$_nc.raw"; then
        error "network-config: $(sed -n 's/^!error //p' "$_nc.raw")"
        return 0
    fi
    sed -n 's/^!ignored //p' "$_nc.raw" | while read -r _line; do log "network-config: $_line ignored"; done
    grep -q '^mode=disabled$' "$_nc.raw" && return 0
    plan_network "$_nc.raw" network-config
}

# The NoCloud seed: SOURCE_ID is its instance-id; status 1 if it is not usable.
id_nocloud() {
    parse_yaml "$WORK/nocloud/meta-data" meta-data || return 1
    SOURCE_ID=$(get "$WORK/nocloud/meta-data.flat" instance-id)
    case "$SOURCE_ID" in
        "") error "meta-data: no instance-id"; return 1 ;;
        *[!A-Za-z0-9._:-]*) error "meta-data: instance-id: only letters, digits and ._:-"; return 1 ;;
    esac
}

plan_nocloud() {
    _m=$WORK/nocloud/meta-data.flat
    ignore "$_m" "" instance-id local-hostname
    _h=$(get "$_m" local-hostname) && plan_hostname "$_h" meta-data
    read_user_data
    read_network_config
}

# The OVF environment: SOURCE_ID is a digest of its properties, salted per machine so it
# tells nothing about the secret ones.
id_ovf() {
    if ! awk -f "$APPLIANCE_FIRSTBOOT_LIB/ovf-env.awk" "$WORK/ovf/ovf-env.xml" \
            > "$WORK/ovf/env.flat" 2>> "$APPLIANCE_LOG"; then
        error "ovf-env.xml: $(awk -F "$TAB" '$1 == "!error" { print $2 }' "$WORK/ovf/env.flat")"
        return 1
    fi
    [ -s "$STATE/salt" ] || head -c 32 /dev/urandom | md5sum | cut -c1-32 > "$STATE/salt"
    SOURCE_ID=$(cat "$STATE/salt" "$WORK/ovf/env.flat" | sha1sum | cut -c1-16)
}

plan_ovf() {
    _o=$WORK/ovf/env.flat
    awk -F "$TAB" '$2 != "" { print $1 }' "$_o" | while read -r _k; do
        case "$_k" in
            hostname | ssh_public_key | password_hash | ip | netmask | gateway | dns | faasd_password) ;;
            *) log "ovf: property $_k is not supported; ignored" ;;
        esac
    done
    _h=$(get "$_o" hostname) && plan_hostname "$_h" ovf
    # one key a line; the value has no newline at its end, for which read would stop early
    { get "$_o" ssh_public_key; echo; } | while read -r _key; do
        plan_key "$_key" "ovf: ssh_public_key"
    done
    plan_secret "$_o" password_hash password_hash
    check_password ovf
    plan_secret "$_o" faasd_password faasd_password
    check_faasd_password ovf
    _ip=$(get "$_o" ip)
    if [ -n "$_ip" ]; then
        {
            echo "mode=static"
            echo "address=$_ip"
            echo "netmask=$(get "$_o" netmask)"
            echo "gateway=$(get "$_o" gateway)"
            echo "dns=$(get "$_o" dns)"
        } > "$WORK/ovf/net.raw"
        plan_network "$WORK/ovf/net.raw" ovf
    fi
}

# --- applying -------------------------------------------------------------------------------

# The saved host name, at every boot (tc-config sets "box" and bootsync.sh the recipe's).
runtime_hostname() {
    [ -s "$STATE/hostname" ] || return 0
    "$APPLIANCE_SETHOSTNAME" "$(cat "$STATE/hostname")" >> "$APPLIANCE_LOG" 2>&1 ||
        log "sethostname failed"
}

state_value() {
    sed -n "s/^$1=//p" "$STATE/network"
}

# The interface of the saved network: by MAC, else by name, else eth0 (Tiny Core's dhcp.sh
# configures only eth*).
net_iface() {
    _mac=$(state_value mac)
    if [ -n "$_mac" ]; then
        for _dev in "$APPLIANCE_SYS_NET"/*; do
            if [ "$(cat "$_dev/address" 2>/dev/null)" = "$_mac" ]; then
                echo "${_dev##*/}"
                return 0
            fi
        done
        log "network: no interface has MAC $_mac"
    fi
    _name=$(state_value iface)
    if [ -n "$_name" ] && [ -e "$APPLIANCE_SYS_NET/$_name" ]; then
        echo "$_name"
    else
        echo eth0
    fi
}

# The saved static network, at every boot. Tiny Core's dhcp.sh starts
# `udhcpc -b -i DEV -p /var/run/udhcpc.DEV.pid` for each eth* without an address
# (tinycorelinux/Core-scripts etc/init.d/dhcp.sh @ 0ed6e60): that one is stopped first, and
# a dhcp.sh still waiting for udev then finds the address and leaves the interface alone.
runtime_network() {
    [ -s "$STATE/network" ] || return 0
    [ "$(state_value mode)" = static ] || return 0
    _if=$(net_iface)
    _pidfile=$APPLIANCE_RUN/udhcpc.$_if.pid
    if [ -s "$_pidfile" ]; then
        kill "$(cat "$_pidfile")" 2>/dev/null && log "network: stopped udhcpc on $_if"
    fi
    if ! timeout 20 "$APPLIANCE_IFCONFIG" "$_if" "$(state_value address)" \
            netmask "$(state_value netmask)" up >> "$APPLIANCE_LOG" 2>&1; then
        log "network: ifconfig $_if failed"
        return 0
    fi
    _gw=$(state_value gateway)
    if [ -n "$_gw" ]; then
        timeout 20 "$APPLIANCE_ROUTE" add default gw "$_gw" >> "$APPLIANCE_LOG" 2>&1 ||
            log "network: default route via $_gw failed"
    fi
    _dns=$(state_value dns)
    if [ -n "$_dns" ]; then
        for _ns in $_dns; do echo "nameserver $_ns"; done > "$APPLIANCE_RESOLV.firstboot" &&
            cat "$APPLIANCE_RESOLV.firstboot" > "$APPLIANCE_RESOLV"
        rm -f "$APPLIANCE_RESOLV.firstboot"
    fi
    log "network: $_if $(state_value address) netmask $(state_value netmask) gateway ${_gw:-none} dns ${_dns:-unchanged}"
}

# A saved password hash comes back when tc's is locked again: on a frugal install tc-config
# makes tc afresh at every boot and bootsync.sh locks it ("*"). A password changed later on
# a traditional install is never reset.
# Is / forgotten at power-off? A frugal install's / is a tmpfs (noembed), the live ISO's the
# initramfs: /etc/shadow and /home/tc are made afresh at every boot there (tc-config's
# addUser, then bootsync.sh locks tc), while a traditional install keeps them on the disk.
volatile_root() {
    case "$(awk '$2 == "/" { t = $3 } END { print t }' "$APPLIANCE_MOUNTS" 2>/dev/null)" in
        tmpfs | rootfs | ramfs) return 0 ;;
    esac
    return 1
}

# On a volatile root the instance's keys and password hash come back at every boot; on a
# disk they were written once, and a password or key changed later stays changed.
runtime_volatile() {
    volatile_root || return 0
    if [ -s "$STATE/authorized_keys" ] && add_keys "$STATE/authorized_keys"; then
        log "ssh_authorized_keys: the seed's keys again (volatile root)"
    fi
    if [ -s "$STATE/password_hash" ] && set_tc_shadow "$STATE/password_hash"; then
        log "password: the seed's hash for tc again (volatile root)"
    fi
}

runtime() {
    runtime_hostname
    runtime_network
    runtime_volatile
}

# set_tc_shadow FILE: tc's password field becomes FILE's line. The hash goes from file to
# file (never an argument: `ps` would show it). cat > keeps the shadow file's owner and mode.
set_tc_shadow() {
    grep -q '^tc:' "$APPLIANCE_SHADOW" 2>/dev/null || { log "no user tc in $APPLIANCE_SHADOW"; return 1; }
    _new=$APPLIANCE_SHADOW.firstboot
    if awk -F: -v OFS=: 'FILENAME == ARGV[1] { hash = $0; next } $1 == "tc" { $2 = hash } { print }' \
            "$1" "$APPLIANCE_SHADOW" > "$_new" && cat "$_new" > "$APPLIANCE_SHADOW"; then
        rm -f "$_new"
        return 0
    fi
    rm -f "$_new"
    log "could not change the password of tc"
    return 1
}

apply_hostname() {
    [ -s "$WORK/plan/hostname" ] || return 0
    cp "$WORK/plan/hostname" "$STATE/hostname" && applied hostname
}

apply_network() {
    [ -s "$WORK/plan/network" ] || return 0
    cp "$WORK/plan/network" "$STATE/network" && applied network
}

# add_keys FILE: FILE's keys after the ones already in tc's authorized_keys, each once.
add_keys() {
    _ssh=$APPLIANCE_TC_HOME/.ssh
    _auth=$_ssh/authorized_keys
    if ! (umask 022 && mkdir -p "$APPLIANCE_TC_HOME") || ! mkdir -p "$_ssh" || ! chmod 700 "$_ssh"; then
        error "ssh_authorized_keys: cannot make $_ssh"
        return 1
    fi
    # tc owns the folder: root never writes through a link tc may have put there
    if [ -L "$_ssh" ] || [ -L "$_auth" ]; then
        error "ssh_authorized_keys: $_auth or its folder is a symbolic link; not changed"
        return 1
    fi
    touch "$_auth"
    if awk 'FILENAME == ARGV[1] { have[$0] = 1; next } !($0 in have) { have[$0] = 1; print }' \
            "$_auth" "$1" > "$WORK/keys.new" && cat "$WORK/keys.new" >> "$_auth"; then
        chmod 600 "$_auth"
        chown "$APPLIANCE_TC_OWNER" "$_ssh" "$_auth" 2>> "$APPLIANCE_LOG" ||
            log "ssh_authorized_keys: chown $APPLIANCE_TC_OWNER failed"
        return 0
    fi
    error "ssh_authorized_keys: cannot write $_auth"
    return 1
}

apply_keys() {
    [ -s "$WORK/plan/authorized_keys" ] || return 0
    if add_keys "$WORK/plan/authorized_keys"; then
        cp "$WORK/plan/authorized_keys" "$STATE/authorized_keys"
        applied ssh_authorized_keys
    fi
}

apply_password() {
    [ -s "$WORK/plan/password_hash" ] || return 0
    if set_tc_shadow "$WORK/plan/password_hash"; then
        cp "$WORK/plan/password_hash" "$STATE/password_hash"
        applied password
    else
        error "password: tc's password could not be set"
    fi
}

# Before faasd starts: its init script keeps an existing password (make_secrets).
apply_faasd_password() {
    [ -s "$WORK/plan/faasd_password" ] || return 0
    _dir=$APPLIANCE_FAASD_SECRETS
    if mkdir -p "$_dir" && chmod 700 "$_dir" &&
            cp "$WORK/plan/faasd_password" "$_dir/basic-auth-password.new" &&
            chmod 600 "$_dir/basic-auth-password.new" &&
            mv "$_dir/basic-auth-password.new" "$_dir/basic-auth-password"; then
        [ -s "$_dir/basic-auth-user" ] || printf '%s' admin > "$_dir/basic-auth-user"
        chmod 600 "$_dir/basic-auth-user"
        applied faasd_password
    else
        rm -f "$_dir/basic-auth-password.new"
        error "faasd_password: cannot write $_dir/basic-auth-password"
    fi
}

# One file: written beside its target, then moved over it.
write_one() {
    _u=$1
    _e=write_files.$2
    _target=$APPLIANCE_ROOT$(get "$_u" "$_e.path")
    _mode=$(get "$_u" "$_e.permissions")
    _owner=$(get "$_u" "$_e.owner")
    # new folders as install would make them, whatever this script's umask
    (umask 022 && mkdir -p "${_target%/*}") || return 1
    # a fresh name (mktemp): a name known in advance could be a planted symlink
    _tmp=$(mktemp "${_target%/*}/.firstboot.XXXXXX") || return 1
    if [ "$(get "$_u" "$_e.append")" = true ] && [ -f "$_target" ]; then
        cat "$_target" > "$_tmp" || { rm -f "$_tmp"; return 1; }
    fi
    if get "$_u" "$_e.content" >> "$_tmp" || ! has "$_u" "$_e.content"; then
        chmod "${_mode:-0644}" "$_tmp" && chown "${_owner:-root:root}" "$_tmp" &&
            mv "$_tmp" "$_target" && log "write_files: $_target" && return 0
    fi
    rm -f "$_tmp"
    return 1
}

apply_write_files() {
    [ -s "$WORK/plan/write_files" ] || return 0
    _u=$WORK/nocloud/user-data.flat
    read -r _list < "$WORK/plan/write_files"
    for _i in $_list; do
        write_one "$_u" "$_i" || { error "write_files[$_i]: could not be written"; return; }
    done
    applied write_files
}

# Each command once, as its argv (no shell), bounded; its output goes to the log.
apply_runcmd() {
    [ -s "$WORK/plan/runcmd" ] || return 0
    _u=$WORK/nocloud/user-data.flat
    read -r _list < "$WORK/plan/runcmd"
    for _i in $_list; do
        set --
        for _j in $(children "$_u" "runcmd.$_i"); do
            set -- "$@" "$(get "$_u" "runcmd.$_i.$_j")"
        done
        log "runcmd[$_i]: $1 ($# words)"
        timeout "$APPLIANCE_RUNCMD_TIMEOUT" "$@" < /dev/null >> "$APPLIANCE_LOG" 2>&1
        log "runcmd[$_i]: exit status $?"
    done
    applied runcmd
}

apply_all() {
    apply_hostname
    apply_keys
    apply_password
    apply_network
    apply_faasd_password
    apply_write_files
    apply_runcmd
}

# use SOURCE: that source is here; applied once per id, runtime state at every boot.
use() {
    _src=$1
    if [ "$(cat "$STATE/applied" 2>/dev/null)" = "$_src $SOURCE_ID" ]; then
        runtime
        console "unchanged $_src $SOURCE_ID"
        return 0
    fi
    mkdir -p "$WORK/plan"
    case $_src in
        nocloud) plan_nocloud ;;
        ovf) plan_ovf ;;
    esac
    # runtime state of an older instance does not carry over to a new one
    rm -f "$STATE/hostname" "$STATE/network" "$STATE/password_hash" "$STATE/authorized_keys"
    apply_all
    echo "$_src $SOURCE_ID" > "$STATE/applied"
    runtime_hostname
    runtime_network
    console "applied $_src $SOURCE_ID ${SETTINGS:--}"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -n "$WORK" ] && rm -rf "$WORK"
}

main() {
    umask 077
    if ! _sources=$(sources); then
        console off
        return 0
    fi
    if ! mkdir -p "$STATE" || ! chmod 700 "$STATE"; then
        error "cannot make $STATE"
        return 0
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/firstboot.XXXXXX") || { error "no temporary folder"; return 0; }
    trap cleanup EXIT
    for _src in $_sources; do
        case $_src in
            nocloud) find_nocloud && id_nocloud && use nocloud && return 0 ;;
            ovf) find_ovf && id_ovf && use ovf && return 0 ;;
        esac
    done
    runtime
    console none
}

main
exit 0
