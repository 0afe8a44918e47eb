"""SSH host keys as data: parsing an OpenSSH public key, its SHA256 fingerprint (the format
`ssh-keygen -lf` prints), the known_hosts line that pins it, and the refusals around pinning.

Pure: fetching a key over the network is `services/host_keys.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct

from provisioner.core.errors import Conflict, Invalid

FINGERPRINT_PATTERN = r"^SHA256:[A-Za-z0-9+/]{43}$"
_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)

# The error code of a job stopped because the host answered with another key than the pinned one.
KEY_CHANGED = "host.key_changed"
# ...and of a job on an ssh host that has no pinned key (enrolled before keys were pinned).
KEY_UNPINNED = "host.key_unpinned"


class BadHostKey(Invalid):
    def __init__(self, why: str) -> None:
        super().__init__("host.key_invalid", f"not an OpenSSH public host key: {why}",
                         hint="give the key as one line 'TYPE BASE64', e.g. the content of ssh_host_ed25519_key.pub")


class BadFingerprint(Invalid):
    def __init__(self, value: str) -> None:
        super().__init__("host.fingerprint_invalid", f"{value[:80]!r} is not a SHA256 fingerprint",
                         hint="give it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it: "
                              "SHA256: followed by 43 base64 characters")


class HostKeyMismatch(Conflict):
    """The host presented another key than the operator said it would."""

    def __init__(self, host: str, expected: str, presented: str) -> None:
        super().__init__("host.key_mismatch",
                         f"host {host} presented the host key {presented}, not the expected {expected}",
                         hint="check the fingerprint on the host's console (ssh-keygen -lf "
                              "/etc/ssh/ssh_host_ed25519_key.pub); someone may be answering in its place",
                         expected=expected, presented=presented)


def parse_public_key(line: str) -> tuple[str, bytes]:
    """(key type, key blob) of 'TYPE BASE64 [comment]'; the blob must name the same type."""
    parts = line.split()
    if len(parts) < 2:
        raise BadHostKey("expected 'TYPE BASE64'")
    kind, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadHostKey("the key is not base64") from None
    if len(blob) < 4:
        raise BadHostKey("the key blob is truncated")
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n] != kind.encode():
        raise BadHostKey(f"the blob is not a {kind} key")
    return kind, blob


def canonical(line: str) -> str:
    """'TYPE BASE64' without the comment: what is stored and compared."""
    kind, blob = parse_public_key(line)
    return f"{kind} {base64.b64encode(blob).decode()}"


def fingerprint(line: str) -> str:
    """SHA256:<unpadded base64 of the blob's sha256>, byte for byte what `ssh-keygen -lf` shows."""
    _, blob = parse_public_key(line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def check_fingerprint(value: str) -> str:
    if not _FINGERPRINT.match(value):
        raise BadFingerprint(value)
    return value


def known_hosts_line(address: str, port: int, key: str) -> str:
    """The line OpenSSH matches for this address and port (non-default ports are written [addr]:port)."""
    name = address if port == 22 else f"[{address}]:{port}"
    return f"{name} {canonical(key)}\n"


def expect(host: str, presented_key: str, expected_fingerprint: str | None) -> str:
    """The presented key's fingerprint; HostKeyMismatch when the operator expected another one."""
    got = fingerprint(presented_key)
    if expected_fingerprint is not None and got != check_fingerprint(expected_fingerprint):
        raise HostKeyMismatch(host, expected_fingerprint, got)
    return got
