#!/bin/sh
# /opt/shutdown.sh (stock, Tiny Core 11 stand-in): a hook for commands to run before a
# shutdown through exittc. A plain poweroff does not run it.
