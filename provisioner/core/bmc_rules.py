"""Rules for a host's BMC (Redfish): which URLs are accepted, how a pinned TLS certificate is named,
which power actions and boot devices exist. Plain data and functions, no I/O.

A BMC is trusted only by the certificate pinned at enrollment (its SHA-256 fingerprint, as
`openssl x509 -noout -fingerprint -sha256` prints it); no CA, no hostname, no plain http.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from enum import StrEnum
from urllib.parse import urlsplit

from provisioner.core.errors import Invalid

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")
_HEX = re.compile(r"^[0-9A-F]{64}$")


class PowerAction(StrEnum):
    on = "on"
    off = "off"  # forced: a host with no OS (or a hung one) ignores a graceful shutdown
    reset = "reset"  # forced restart


class BootDevice(StrEnum):
    cd = "cd"  # virtual media
    pxe = "pxe"
    hdd = "hdd"


def check_url(url: str) -> str:
    """The BMC's base URL (scheme and authority only) or Invalid: https, no credentials, no path."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid("bmc.url_invalid", f"not a URL: {exc}", hint="give https://HOST[:PORT]") from None
    if parts.scheme != "https":
        raise Invalid("bmc.url_insecure", f"the BMC URL must use https, not {parts.scheme or 'no scheme'!r}",
                      hint="the BMC password travels with every request and the BMC is trusted only by its "
                           "pinned certificate: give https://HOST[:PORT]")
    if not parts.hostname:
        raise Invalid("bmc.url_invalid", "the BMC URL has no host", hint="give https://HOST[:PORT]")
    if parts.username is not None or parts.password is not None:
        raise Invalid("bmc.url_invalid", "the BMC URL must not carry credentials",
                      hint="give the user and password in their own fields (the password is stored encrypted)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid("bmc.url_invalid", "the BMC URL must be https://HOST[:PORT] only",
                      hint="the Redfish root /redfish/v1 is found by the client")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"https://{host}" + (f":{port}" if port is not None else "")


def cert_fingerprint(pem: str) -> str:
    """SHA-256 fingerprint of the first certificate of a PEM text ("AB:CD:..."), or Invalid."""
    m = _PEM.search(pem)
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True) if m else b""
    except (binascii.Error, ValueError):
        der = b""
    if not der:
        raise Invalid("bmc.cert_invalid", "not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                      hint="give the BMC's certificate as PEM, or its SHA-256 fingerprint")
    return _colons(hashlib.sha256(der).hexdigest().upper())


def normalise_fingerprint(text: str) -> str:
    """"AB:CD:...", "abcd...", "sha256 Fingerprint=AB:CD:..." → "AB:CD:..." (64 hex digits), or Invalid."""
    value = text.strip()
    if "=" in value:
        value = value.split("=", 1)[1]
    if value.upper().startswith("SHA256:"):
        value = value[7:]
    digits = value.replace(":", "").upper()
    if not _HEX.match(digits):
        raise Invalid("bmc.fingerprint_invalid", "a BMC certificate fingerprint is 32 bytes of SHA-256 in hex",
                      hint="print it with: openssl x509 -noout -fingerprint -sha256 -in CERT")
    return _colons(digits)


def pinned_fingerprint(cert_pem: str | None, fingerprint: str | None) -> str:
    """The fingerprint to pin from what the operator gave; both given must agree; neither is refused."""
    from_pem = cert_fingerprint(cert_pem) if cert_pem else None
    given = normalise_fingerprint(fingerprint) if fingerprint else None
    if from_pem and given and from_pem != given:
        raise Invalid("bmc.cert_fingerprint_differs", f"the certificate's fingerprint is {from_pem}, not {given}",
                      hint="give the certificate or its fingerprint, and check which one the BMC serves")
    pinned = from_pem or given
    if not pinned:
        raise Invalid("bmc.cert_required", "a BMC is trusted only by a pinned TLS certificate",
                      hint="give cert_pem (the BMC's certificate) or cert_fingerprint "
                           "(openssl x509 -noout -fingerprint -sha256)")
    return pinned


def _colons(hex_upper: str) -> str:
    return ":".join(hex_upper[i:i + 2] for i in range(0, len(hex_upper), 2))
