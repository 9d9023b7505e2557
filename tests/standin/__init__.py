"""The stand-in for Tiny Core Linux 11, built from Debian packages (DESIGN.md section 8).

`python -m tests.standin kernel` builds (or reuses) the stand-in kernel.
"""
