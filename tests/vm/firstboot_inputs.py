"""What the first-boot vm tests hand a guest: a fresh SSH key and an OVF environment."""

from __future__ import annotations

import subprocess
from pathlib import Path


def new_key(folder: Path, name: str = "seed_key") -> tuple[Path, str]:
    """A fresh ed25519 key pair in `folder`: the private key's path and the public key line."""
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test",
                    "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def ovf_env_xml(hostname: str, public_key: str) -> str:
    """An ovf-env.xml as vSphere writes it (oe: prefix), with a host name, a key, no address."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv" oe:id="" ve:vCenterId="vm-1">
  <PropertySection>
    <Property oe:key="hostname" oe:value="{hostname}"/>
    <Property oe:key="ssh_public_key" oe:value="{public_key}"/>
    <Property oe:key="ip" oe:value=""/>
  </PropertySection>
</Environment>
"""
