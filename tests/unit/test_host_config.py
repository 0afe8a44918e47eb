"""The host configuration bundle (core/host_config.py), the writer that puts it into a root
(module_utils/prov_host_config.py) and the per-job config ISO that carries it to the ramdisk."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest

from provisioner.core.errors import Invalid
from provisioner.core.host_config import (
    NETWORK_FILE,
    ConfigFile,
    HostConfig,
    HostKeyPair,
    bundle,
    config_files,
)
from provisioner.core.host_keys import fingerprint
from provisioner.imaging.config_iso import BUNDLE_NAME, LABEL, config_iso
from provisioner.services.host_key_gen import new_host_key
from tests.module_utils import load_module_util

writer = load_module_util("prov_host_config")
MGMT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUyVPCJGFFPTi03ShvL9Z5x2k8PBnDtXo7U0i3BtlZd provisioner@service"


@pytest.fixture(scope="module")
def key() -> HostKeyPair:
    return new_host_key("host-1")


def test_generated_host_key_is_what_ssh_keygen_reads(key: HostKeyPair, tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(key.private)
    path.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == key.public.split()[:2]
    assert "PRIVATE" not in repr(key)


def test_files_of_a_host(key: HostKeyPair) -> None:
    files = {f.path: f for f in config_files(HostConfig("web-1.lab", (MGMT,), (key,)))}
    assert files["/etc/hostname"].content == b"web-1.lab\n"
    assert b"127.0.1.1\tweb-1.lab web-1\n" in files["/etc/hosts"].content
    assert files["/etc/ssh/ssh_host_ed25519_key"].content == key.private
    assert files["/etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert fingerprint(files["/etc/ssh/ssh_host_ed25519_key.pub"].content.decode()) == fingerprint(key.public)
    auth = files["/root/.ssh/authorized_keys"]
    assert auth.content == (MGMT + "\n").encode() and auth.mode == 0o600 and auth.dir_mode == 0o700
    assert b"DHCP=yes" in files[NETWORK_FILE].content
    private = repr(files["/etc/ssh/ssh_host_ed25519_key"])
    assert "bytes" in private and "BEGIN" not in private


@pytest.mark.parametrize("cfg_kw, code", [
    ({"hostname": "bad_name"}, "host.hostname_invalid"),
    ({"hostname": "-x"}, "host.hostname_invalid"),
    ({"hostname": "a" * 64}, "host.hostname_invalid"),
    ({"authorized_keys": ()}, "host.no_authorized_key"),
    ({"authorized_keys": ("not a key",)}, "host.key_invalid"),
    ({"host_keys": ()}, "host.no_host_key"),
    ({"network": "static"}, "host.network_unknown"),
])
def test_refusals(key: HostKeyPair, cfg_kw: dict, code: str) -> None:
    kw = {"hostname": "h", "authorized_keys": (MGMT,), "host_keys": (key,), **cfg_kw}
    with pytest.raises(Invalid) as e:
        config_files(HostConfig(**kw))
    assert e.value.code == code


def test_two_keys_of_one_kind_or_a_non_openssh_private_key_are_refused(key: HostKeyPair) -> None:
    other = new_host_key()
    with pytest.raises(Invalid, match="two host keys"):
        config_files(HostConfig("h", (MGMT,), (key, other)))
    with pytest.raises(Invalid, match="not an OpenSSH private key"):
        config_files(HostConfig("h", (MGMT,), (HostKeyPair(b"-----BEGIN PRIVATE KEY-----\n", key.public),)))


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), p.read_bytes() if p.is_file() else None)
    return out


def test_writer_puts_the_bundle_into_a_root(key: HostKeyPair, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/hostname").write_text("localhost\n")
    files = config_files(HostConfig("web-1", (MGMT,), (key,)))
    changed = writer.apply_bundle(str(root), bundle(files))
    assert changed == [f.path for f in files]
    tree = _tree(root)
    for f in files:
        assert tree[f.path.lstrip("/")] == (f.mode, f.content), f.path
    assert tree["root/.ssh"][0] == 0o700 and tree["etc/systemd/network"][0] == 0o755
    assert not [p for p in tree if ".prov-tmp" in p]
    assert all(os.stat(root / f.path.lstrip("/")).st_uid == 0 for f in files)
    # the same bundle again changes nothing; a changed mode is put back
    assert writer.apply_bundle(str(root), bundle(files)) == []
    (root / "etc/ssh/ssh_host_ed25519_key").chmod(0o644)
    assert writer.apply_bundle(str(root), bundle(files)) == ["/etc/ssh/ssh_host_ed25519_key"]


def test_writer_never_follows_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "root").mkdir(parents=True)
    outside.mkdir()
    (root / "root/.ssh").symlink_to(outside)
    data = bundle([ConfigFile("/root/.ssh/authorized_keys", b"k\n", 0o600, 0o700)])
    with pytest.raises(writer.ConfigError, match="symlink"):
        writer.apply_bundle(str(root), data)
    (root / "etc").mkdir()
    (root / "etc/hostname").symlink_to(outside / "hostname")
    with pytest.raises(writer.ConfigError, match="symlink"):
        writer.apply_bundle(str(root), bundle([ConfigFile("/etc/hostname", b"x\n", 0o644)]))
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("path", ["etc/hostname", "/etc/../../x", "/etc//hostname", "/./x", "/"])
def test_writer_refuses_paths_that_are_not_plain_absolute(path: str, tmp_path: Path) -> None:
    doc = {"version": 1, "files": [{"path": path, "mode": "0644", "content_b64": ""}]}
    with pytest.raises(writer.ConfigError, match="refused path"):
        writer.apply_bundle(str(tmp_path), json.dumps(doc).encode())


def test_writer_refuses_an_unknown_bundle_version(tmp_path: Path) -> None:
    with pytest.raises(writer.ConfigError, match="version"):
        writer.apply_bundle(str(tmp_path), b'{"version": 2, "files": []}')


def test_writer_as_a_program(key: HostKeyPair, tmp_path: Path) -> None:
    src = tmp_path / "provcfg.json"
    src.write_bytes(bundle(config_files(HostConfig("ramdisk-7", (MGMT,), (key,)))))
    (tmp_path / "root").mkdir()
    run = subprocess.run(["python3", writer.__file__, str(src), str(tmp_path / "root")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "root/etc/hostname").read_text() == "ramdisk-7\n"
    assert key.private.decode() not in run.stdout + run.stderr


def test_config_iso_carries_the_bundle_under_its_label(key: HostKeyPair, tmp_path: Path) -> None:
    files = config_files(HostConfig("deploy-42", (MGMT,), (key,)))
    image = config_iso(files)
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    assert iso.pvd.volume_identifier.decode().strip() == LABEL
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=f"/{BUNDLE_NAME}")
    iso.close()
    assert out.getvalue() == bundle(files)
    # and the ramdisk's writer makes the same root from it
    root = tmp_path / "root"
    root.mkdir()
    writer.apply_bundle(str(root), out.getvalue())
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == key.private
    # the ramdisk finds the medium with blkid, by this label
    (tmp_path / "cfg.iso").write_bytes(image)
    blkid = subprocess.run(["blkid", "-p", "-o", "export", str(tmp_path / "cfg.iso")],
                           capture_output=True, text=True, check=True)
    assert f"LABEL={LABEL}" in blkid.stdout.splitlines() and "TYPE=iso9660" in blkid.stdout.splitlines()
