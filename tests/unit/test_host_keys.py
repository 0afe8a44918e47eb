"""Host key parsing and fingerprints, checked against OpenSSH's own ssh-keygen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner.core.host_keys import (
    BadFingerprint,
    BadHostKey,
    HostKeyMismatch,
    canonical,
    expect,
    fingerprint,
    known_hosts_line,
)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "a comment", "-f", str(key)], check=True)
    line = (tmp_path / "k.pub").read_text()
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], check=True, capture_output=True,
                         text=True).stdout.split()
    assert fingerprint(line) == out[1]
    assert canonical(line) == " ".join(line.split()[:2])


def test_known_hosts_line_is_accepted_by_ssh_keygen(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    line = (tmp_path / "k.pub").read_text()
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts_line("10.0.0.5", 2222, line) + known_hosts_line("10.0.0.6", 22, line))
    for name in ("[10.0.0.5]:2222", "10.0.0.6"):
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True, text=True)
        assert found.returncode == 0 and canonical(line) in found.stdout, name
    assert subprocess.run(["ssh-keygen", "-F", "10.0.0.5", "-f", str(kh)], capture_output=True).returncode == 1


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 !!!notbase64", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGZ0"
                                 "ZXN0a2V5Zm9ydGhlcHJvdmlzaW9uZXJ0ZXN0cw"])
def test_bad_keys_are_refused(bad: str) -> None:
    with pytest.raises(BadHostKey):
        fingerprint(bad)


def test_expected_fingerprint(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    key = (tmp_path / "k.pub").read_text()
    fp = fingerprint(key)
    assert expect("h", key, None) == fp == expect("h", key, fp)
    other = "SHA256:" + "A" * 43
    with pytest.raises(HostKeyMismatch) as exc:
        expect("h", key, other)
    assert exc.value.code == "host.key_mismatch" and exc.value.extra == {"expected": other, "presented": fp}
    with pytest.raises(BadFingerprint):
        expect("h", key, "MD5:aa:bb")
