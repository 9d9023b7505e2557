"""tc-appliance: Tiny Core Linux 11 -> container appliance (qcow2, OVA)."""

__version__ = "0.1.0"
