#!/bin/sh
# root's login profile, as tinycorelinux/Core-scripts root/.profile @ 0ed6e60. Booted with
# noautologin, tc-config left "booting" in /etc/sysconfig/noautologin: the first (automatic)
# root login only empties it and exits, so getty asks for a login. Otherwise root's shell
# logs the Tiny Core user in (the stand-in has no `superuser` boot code).
NOAUTOLOGIN=/etc/sysconfig/noautologin
if [ -f "$NOAUTOLOGIN" ]; then
    if [ -s "$NOAUTOLOGIN" ]; then
        : > "$NOAUTOLOGIN"
        exit
    fi
else
    clear
    exec /bin/login -f "$(cat /etc/sysconfig/tcuser)"
fi
