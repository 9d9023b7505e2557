#!/bin/sh
# dhcp.sh of the Tiny Core 11 stand-in: DHCP on every eth* interface with busybox udhcpc,
# in the background (tc-config starts this with &; the boot code nodhcp skips it).
# As on Tiny Core, only interfaces named eth* are configured.
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH

# A NIC driver loaded by tc-config may need a moment to register its interface.
tries=10
while [ "$tries" -gt 0 ] && ! grep -q 'eth[0-9]*:' /proc/net/dev; do
    sleep 1
    tries=$((tries - 1))
done

IFACES=$(awk -F: '/eth[0-9]+:/ { gsub(/ /, "", $1); print $1 }' /proc/net/dev)
for iface in $IFACES; do
    ifconfig "$iface" up
    udhcpc -b -i "$iface" -x "hostname:$(hostname)" -p "/var/run/udhcpc.$iface.pid" \
        -s /usr/share/udhcpc/default.script >/dev/null 2>&1
done
