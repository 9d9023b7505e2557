#!/bin/sh
# /etc/acpi/PWRF/00000080 of tc-appliance (iso-remaster/power-button.sh, in boot/appliance.gz).
# busybox acpid, started by /opt/bootsync.sh, runs it when the ACPI power button is pressed:
# a hypervisor's "shut down" (VirtualBox, VMware, QEMU's system_powerdown). Tiny Core has no
# other handler, and without one the button does nothing. poweroff runs the shutdown
# scripts, so services stop and the disk is synced before the power goes.
echo "power button: powering off" > /dev/console 2>/dev/null
exec /sbin/poweroff
