#!/bin/sh
# filetool.sh of the Tiny Core 11 stand-in: backs up and restores the user's files.
#
#   filetool.sh -b [-s] [-d] [-v] [DEV[/dir]]    back up to DEV/dir/mydata.tgz
#   filetool.sh -r [-v] [DEV[/dir]]              restore it into /
#
# DEV is a device name (sda1) or LABEL=x / UUID=y, mounted on /mnt/DEV as needed; without
# it, /etc/sysconfig/backup_device, else the persistent tce directory. What is saved: the
# paths (relative to /) in /opt/.filetool.lst, minus those matching a pattern in
# /opt/.xfiletool.lst (exclusions win). -s keeps the previous backup as mydatabk.tgz (so does
# the boot code safebackup), -d lists what would be saved.
#
# Stand-in difference: busybox's tar here has no -T/-X, so the file list is built in shell
# and handed to tar as arguments.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# shellcheck source=/dev/null
. /etc/init.d/tc-functions

MYDATA=$(cat /etc/sysconfig/mydata 2>/dev/null || echo mydata)
ACTION=""
SAFE=0
DRYRUN=0
VERBOSE=""

usage() {
    echo "usage: filetool.sh -b|-r [-s] [-d] [-v] [DEV[/dir]]" >&2
    exit 1
}

# target_dir SPEC: the directory the backup lives in (mounting its device).
target_dir() {
    case "$1" in /*) echo "$1"; return 0 ;; esac
    _dev=$(spec_device "$1") || return 1
    _mp=$(mount_device "$_dev") || return 1
    _dir=$(spec_dir "$1")
    echo "$_mp${_dir:+/$_dir}"
}

default_spec() {
    if [ -s /etc/sysconfig/backup_device ]; then
        cat /etc/sysconfig/backup_device
        return 0
    fi
    _tce=$(tce_dir)
    [ "$_tce" != /tmp/tce ] || return 1
    echo "${_tce#/mnt/}"
}

# excluded PATH: true when a pattern of .xfiletool.lst matches PATH, one of its parent
# directories, or a trailing part of it (as GNU tar -X matches).
excluded() {
    [ -f /opt/.xfiletool.lst ] || return 1
    while read -r _pat; do
        [ -n "$_pat" ] || continue
        _pat=${_pat#/}
        # shellcheck disable=SC2254 # the pattern is meant to glob
        case "$1" in $_pat | */$_pat | $_pat/* | */$_pat/*) return 0 ;; esac
    done < /opt/.xfiletool.lst
    return 1
}

# file_list: every path to save, relative to /, one a line.
file_list() {
    sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's#^/##' -e '/^$/d' \
        /opt/.filetool.lst | while read -r _entry; do
        [ -e "/$_entry" ] || [ -L "/$_entry" ] || continue
        (cd / && find "$_entry") | while read -r _path; do
            excluded "$_path" || echo "$_path"
        done
    done
}

backup() {
    _list=/tmp/filetool.list
    file_list > "$_list"
    if [ "$DRYRUN" -eq 1 ]; then
        cat "$_list"
        return 0
    fi
    as_root mkdir -p "$1" || return 1
    [ "$SAFE" -eq 1 ] && [ -f "$1/$MYDATA.tgz" ] && as_root mv "$1/$MYDATA.tgz" "$1/${MYDATA}bk.tgz"
    echo "Backing up files to $1/$MYDATA.tgz"
    _old_ifs=$IFS
    IFS='
'
    set -f
    # shellcheck disable=SC2046 # one argument per line of the list
    as_root tar -C / -c -z $VERBOSE --no-recursion -f "$1/$MYDATA.tgz" $(cat "$_list") || return 1
    set +f
    IFS=$_old_ifs
    touch /tmp/backup_done
}

restore() {
    [ -f "$1/$MYDATA.tgz" ] || {
        echo "filetool.sh: $1/$MYDATA.tgz not found" >&2
        return 1
    }
    as_root tar -C / -x -z $VERBOSE -f "$1/$MYDATA.tgz"
}

while getopts brsdvp opt; do
    case "$opt" in
        b) ACTION=backup ;;
        r) ACTION=restore ;;
        s) SAFE=1 ;;
        d) DRYRUN=1 ;;
        v) VERBOSE=-v ;;
        p) ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ -n "$ACTION" ] || usage
bootflag safebackup && SAFE=1

SPEC=${1:-}
[ -n "$SPEC" ] || SPEC=$(default_spec) || {
    echo "filetool.sh: no backup device (give one, e.g. sda1)" >&2
    exit 1
}
DIR=$(target_dir "$SPEC") || {
    echo "filetool.sh: $SPEC: device not found" >&2
    exit 1
}
if [ "$ACTION" = backup ]; then
    backup "$DIR" || exit 1
    [ "$DRYRUN" -eq 1 ] || echo "$SPEC" | as_root tee /etc/sysconfig/backup_device >/dev/null
else
    restore "$DIR" || exit 1
fi
exit 0
