"""The stand-in for Tiny Core Linux 11, built from Debian packages (docs/architecture.md#stand-in).

`python -m tests.standin kernel` builds (or reuses) the stand-in kernel.
"""
