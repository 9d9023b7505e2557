# ~/.profile of a Tiny Core user (stand-in): login shells read it after /etc/profile.
PAGER=less
export PAGER
