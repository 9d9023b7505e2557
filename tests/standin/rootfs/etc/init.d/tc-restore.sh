#!/bin/sh
# tc-restore.sh of the Tiny Core 11 stand-in: restores the backup (mydata.tgz) at boot.
# Run as root by tc-config, after the extensions are loaded and before /opt/bootsync.sh.
#
# Where from: restore=DEV[/dir] wins; else the tce directory when it holds the backup; else
# the first device with a top-level backup file that the autoscan looks at (never a CD:
# scan_devices). Without a backup anywhere, a persistent tce
# directory becomes the backup device for filetool.sh -b.
# Exit status: 0 restored, 1 a restore failed, 2 nothing to restore.
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
export PATH
# shellcheck source=/dev/null
. /etc/init.d/tc-functions

MYDATA=$(prefixcode mydata)
[ -n "$MYDATA" ] || MYDATA=mydata
echo "$MYDATA" > /etc/sysconfig/mydata
TCEDIR=$(tce_dir)

restore_from() { # $1 = DEV[/dir]
    echo "Restoring backup files from $1/$MYDATA.tgz"
    if /usr/bin/filetool.sh -r "$1"; then
        echo "$1" > /etc/sysconfig/backup_device
        exit 0
    fi
    exit 1
}

if bootflag protect; then
    echo "protect: encrypted backups are not supported by the stand-in; nothing restored"
    exit 1
fi

# restore*=DEV: tc-restore.sh matches the code by prefix too.
SPEC=$(prefixcode restore)
[ -n "$SPEC" ] && restore_from "$SPEC"

# The tce directory as DEV/dir, e.g. /mnt/sda1/tce -> sda1/tce.
if [ "$TCEDIR" != /tmp/tce ]; then
    TCESPEC=${TCEDIR#/mnt/}
    [ -f "$TCEDIR/$MYDATA.tgz" ] && restore_from "$TCESPEC"
fi

for DEV in $(scan_devices); do
    WAS=$(mounted_at "$DEV")
    MP=$(mount_device "$DEV") || continue
    [ -f "$MP/$MYDATA.tgz" ] && restore_from "$DEV"
    [ -n "$WAS" ] || umount "$MP" 2>/dev/null
done

[ "$TCEDIR" != /tmp/tce ] && echo "$TCESPEC" > /etc/sysconfig/backup_device
exit 2
