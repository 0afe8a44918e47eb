"""The BMC rules: which URLs are accepted, how a pinned certificate is named."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from provisioner.core.bmc_rules import cert_fingerprint, check_url, normalise_fingerprint, pinned_fingerprint
from provisioner.core.errors import Invalid


@pytest.mark.parametrize(("url", "want"), [
    ("https://10.0.0.5", "https://10.0.0.5"),
    ("https://bmc.example:8443/", "https://bmc.example:8443"),
    ("https://[fe80::1]:443", "https://[fe80::1]:443"),
])
def test_accepted_urls(url: str, want: str) -> None:
    assert check_url(url) == want


@pytest.mark.parametrize(("url", "code"), [
    ("http://10.0.0.5", "bmc.url_insecure"),
    ("10.0.0.5", "bmc.url_insecure"),
    ("ftp://10.0.0.5", "bmc.url_insecure"),
    ("https://", "bmc.url_invalid"),
    ("https://admin:pw@10.0.0.5", "bmc.url_invalid"),
    ("https://10.0.0.5/redfish/v1", "bmc.url_invalid"),
    ("https://10.0.0.5?x=1", "bmc.url_invalid"),
    ("https://10.0.0.5:99999", "bmc.url_invalid"),
])
def test_refused_urls(url: str, code: str) -> None:
    with pytest.raises(Invalid) as exc:
        check_url(url)
    assert exc.value.code == code


def test_cert_fingerprint_is_what_openssl_prints(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=t", "-keyout", str(tmp_path / "k.pem"), "-out", str(cert)],
                   check=True, capture_output=True)
    printed = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                             check=True, capture_output=True, text=True).stdout
    assert cert_fingerprint(cert.read_text()) == printed.strip().split("=", 1)[1]
    assert normalise_fingerprint(printed) == cert_fingerprint(cert.read_text())


def test_fingerprint_forms() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    canonical = ":".join(digest.upper()[i:i + 2] for i in range(0, 64, 2))
    for form in (digest, digest.upper(), canonical, canonical.lower(), f"SHA256:{digest}",
                 f"sha256 Fingerprint={canonical}"):
        assert normalise_fingerprint(form) == canonical
    for bad in ("", "AB:CD", digest[:-1], digest + "00", "zz" * 32):
        with pytest.raises(Invalid):
            normalise_fingerprint(bad)


def test_pinned_fingerprint_needs_one_and_both_must_agree() -> None:
    der = b"not really DER but bytes"
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(der).decode() + "\n-----END CERTIFICATE-----\n"
    fp = cert_fingerprint(pem)
    assert fp.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert pinned_fingerprint(pem, None) == fp == pinned_fingerprint(None, fp) == pinned_fingerprint(pem, fp)
    with pytest.raises(Invalid) as exc:
        pinned_fingerprint(None, None)
    assert exc.value.code == "bmc.cert_required"
    with pytest.raises(Invalid) as exc:
        pinned_fingerprint(pem, normalise_fingerprint("00" * 32))
    assert exc.value.code == "bmc.cert_fingerprint_differs"
    with pytest.raises(Invalid) as exc:
        pinned_fingerprint("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----", None)
    assert exc.value.code == "bmc.cert_invalid"
