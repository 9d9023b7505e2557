#!/bin/sh
# /opt/bootsync.sh (stock, Tiny Core 11 stand-in): run by tc-config at the end of the boot,
# which waits for it. Put commands that must finish before the boot is over here; anything
# that may run in the background belongs in /opt/bootlocal.sh.
/usr/bin/sethostname box
/opt/bootlocal.sh &
