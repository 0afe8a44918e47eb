"""The configuration the service writes into a host's new root, and into the deploy ramdisk:
which files, with what content and mode, from what inputs. Pure: no keys are generated here (see
``provisioner/services/host_key_gen.py``) and nothing is written (the writer is
``playbooks/roles/provisioner/module_utils/prov_host_config.py``, on the host or in the ramdisk).

Why files written straight into the mounted root, not a cloud-init NoCloud seed or a config drive:
the image carries no cloud-init, so the first boot runs no datasource discovery and no modules
(seconds under emulation, and behaviour that changes with cloud-init's version); what the deployed
OS boots with is exactly these files, checked here and written atomically by the ramdisk, and the
SSH host key is in place before sshd first starts, so the first contact is already pinned. The same
bundle also configures the ramdisk itself from its per-job config ISO.

The bundle (``bundle()``, JSON): ``{"version": 1, "files": [{"path", "mode", "dir_mode",
"content_b64"}]}``, read by the writer's ``load_bundle``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from provisioner.core.errors import Invalid
from provisioner.core.host_keys import canonical, parse_public_key

BUNDLE_VERSION = 1
# An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# OpenSSH's file name for each host key type it loads by default.
HOST_KEY_FILES = {
    "ssh-ed25519": "ssh_host_ed25519_key",
    "ecdsa-sha2-nistp256": "ssh_host_ecdsa_key",
    "ecdsa-sha2-nistp384": "ssh_host_ecdsa_key",
    "ecdsa-sha2-nistp521": "ssh_host_ecdsa_key",
    "ssh-rsa": "ssh_host_rsa_key",
}
NETWORK_FILE = "/etc/systemd/network/10-provisioner.network"
# DHCP on every Ethernet NIC (systemd-networkd); sorts before the image's own 90-dhcp-all.network.
DHCP_ALL = "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n"


@dataclass(frozen=True)
class HostKeyPair:
    """An SSH host key the service generated: the private key file exactly as OpenSSH writes it
    (a secret: bytes, never logged) and its public line."""

    private: bytes
    public: str

    def __repr__(self) -> str:  # never print the private key
        return f"HostKeyPair(public={self.public.split()[0]!r}, private=<{len(self.private)} bytes>)"


@dataclass(frozen=True)
class HostConfig:
    hostname: str
    authorized_keys: tuple[str, ...]
    host_keys: tuple[HostKeyPair, ...]
    network: str = "dhcp"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: bytes
    mode: int
    dir_mode: int = 0o755

    def __repr__(self) -> str:
        return f"ConfigFile({self.path!r}, mode={self.mode:o}, {len(self.content)} bytes)"


def check_hostname(name: str) -> str:
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise Invalid("host.hostname_invalid", f"{name[:80]!r} is not a host name",
                      hint="letters, digits and inner hyphens, dot-separated labels of at most 63 characters")
    return name


def _authorized_keys(lines: tuple[str, ...]) -> bytes:
    if not lines:
        raise Invalid("host.no_authorized_key", "no key may log in to the host",
                      hint="give at least the service's management public key")
    out = []
    for line in lines:
        parts = line.split()
        parse_public_key(line)  # refuses what is not 'TYPE BASE64 [comment]'
        comment = " " + " ".join(parts[2:]) if len(parts) > 2 else ""
        out.append(canonical(line) + comment)
    return ("\n".join(out) + "\n").encode()


def _host_key_files(keys: tuple[HostKeyPair, ...]) -> list[ConfigFile]:
    if not keys:
        raise Invalid("host.no_host_key", "no SSH host key for the host: its first contact would not be pinned",
                      hint="generate one with provisioner.services.host_key_gen.new_host_key()")
    files: list[ConfigFile] = []
    seen: set[str] = set()
    for key in keys:
        kind, _ = parse_public_key(key.public)
        name = HOST_KEY_FILES.get(kind)
        if name is None:
            raise Invalid("host.key_type", f"sshd has no default file for {kind} host keys",
                          hint=f"use one of {', '.join(sorted(HOST_KEY_FILES))}")
        if name in seen:
            raise Invalid("host.key_type", f"two host keys of the kind {name}", hint="give one key per type")
        if not key.private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            raise Invalid("host.key_invalid", f"the private {kind} key is not an OpenSSH private key file",
                          hint="write it as OpenSSH does (PEM, 'BEGIN OPENSSH PRIVATE KEY')")
        seen.add(name)
        files.append(ConfigFile(f"/etc/ssh/{name}", key.private, 0o600))
        files.append(ConfigFile(f"/etc/ssh/{name}.pub", (canonical(key.public) + "\n").encode(), 0o644))
    return files


def config_files(cfg: HostConfig) -> list[ConfigFile]:
    """Every file the host's configuration consists of, in the order they are written."""
    name = check_hostname(cfg.hostname)
    if cfg.network != "dhcp":
        raise Invalid("host.network_unknown", f"unknown network setting {cfg.network!r}",
                      hint="only 'dhcp' (DHCP on every Ethernet NIC) is supported")
    short = name.split(".")[0]
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}{'' if short == name else ' ' + short}\n" \
            "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    return [
        ConfigFile("/etc/hostname", f"{name}\n".encode(), 0o644),
        ConfigFile("/etc/hosts", hosts.encode(), 0o644),
        *_host_key_files(cfg.host_keys),
        ConfigFile("/root/.ssh/authorized_keys", _authorized_keys(cfg.authorized_keys), 0o600, dir_mode=0o700),
        ConfigFile(NETWORK_FILE, DHCP_ALL.encode(), 0o644),
    ]


def bundle(files: list[ConfigFile]) -> bytes:
    """The files as the writer reads them (JSON; contents base64)."""
    doc = {"version": BUNDLE_VERSION, "files": [
        {"path": f.path, "mode": f"{f.mode:04o}", "dir_mode": f"{f.dir_mode:04o}",
         "content_b64": base64.b64encode(f.content).decode()} for f in files]}
    return json.dumps(doc, indent=1).encode()
