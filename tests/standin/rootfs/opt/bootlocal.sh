#!/bin/sh
# /opt/bootlocal.sh (stock, Tiny Core 11 stand-in): an empty hook, started in the background
# by /opt/bootsync.sh. Put boot-time commands that may run in the background here.
