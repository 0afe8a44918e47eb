"""The per-job boot ISO (provisioner/imaging/boot_iso.py), built from a small stand-in for the deploy
ramdisk ISO made exactly as images/build-ramdisk.sh makes it (xorriso, isolinux El Torito with a boot
info table, Rock Ridge + Joliet): read back with pycdlib and blkid. That it boots is
tests/e2e/test_image_boot.py's job (the real ramdisk under QEMU)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pycdlib
import pytest

from provisioner.core.errors import Unavailable
from provisioner.core.host_config import HostConfig, HostKeyPair, bundle, config_files
from provisioner.imaging.boot_iso import (
    BUNDLE_NAME,
    LABEL,
    ramdisk_iso_path,
    write_boot_iso,
    write_boot_iso_file,
)
from provisioner.services.host_key_gen import new_host_key
from tests.module_utils import load_module_util

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
MGMT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl mgmt@provisioner"
BOOT_FILES = {"/isolinux/isolinux.bin", "/isolinux/ldlinux.c32", "/isolinux/isolinux.cfg", "/vmlinuz", "/initrd.zst"}
writer = load_module_util("prov_host_config")

if not shutil.which("xorriso") or not ISOLINUX.is_file() or not LDLINUX.is_file():
    pytest.skip("needs xorriso and isolinux (scripts/install-lab-deps.sh)", allow_module_level=True)


def fake_ramdisk(out_dir: Path, initrd_bytes: int = 300_000) -> Path:
    """A build dir like images/build-ramdisk.sh's: deploy-ramdisk.iso (same xorriso flags) and ramdisk.json."""
    tree = out_dir / "tree"
    (tree / "isolinux").mkdir(parents=True)
    shutil.copy(ISOLINUX, tree / "isolinux")
    shutil.copy(LDLINUX, tree / "isolinux")
    (tree / "isolinux/isolinux.cfg").write_text("DEFAULT deploy\nLABEL deploy\n  KERNEL /vmlinuz\n"
                                                "  INITRD /initrd.zst\n")
    (tree / "vmlinuz").write_bytes(os.urandom(100_000))
    with open(tree / "initrd.zst", "wb") as f:
        f.write(os.urandom(4096))
        f.truncate(initrd_bytes)
    iso = out_dir / "deploy-ramdisk.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(iso), "-V", "PROVDEPLOY", "-J", "-R",
                    "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                    "-boot-info-table", str(tree)], check=True, capture_output=True)
    (out_dir / "ramdisk.json").write_text(json.dumps(
        {"build_id": "test", "files": {"deploy-ramdisk.iso": {"size": iso.stat().st_size}}}))
    return out_dir


@pytest.fixture(scope="module")
def ramdisk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_ramdisk(tmp_path_factory.mktemp("ramdisk"))


@pytest.fixture(scope="module")
def key() -> HostKeyPair:
    return new_host_key()


def _read(iso: pycdlib.PyCdlib, **where: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **where)
    return out.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_boot_iso_is_the_ramdisk_plus_the_bundle_under_provcfg(ramdisk: Path, key: HostKeyPair,
                                                                  tmp_path: Path) -> None:
    files = config_files(HostConfig("deploy-42", (MGMT,), (key,)))
    src = ramdisk_iso_path(ramdisk)
    before = _sha(src)
    out = write_boot_iso_file(src, files, tmp_path / "boot.iso")
    assert out.stat().st_mode & 0o777 == 0o600
    assert _sha(src) == before, "the shared ramdisk ISO must never change"

    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        # the label, in both descriptors (blkid reads Joliet's when there is one)
        assert iso.pvd.volume_identifier.decode().strip() == LABEL
        assert iso.joliet_vd is not None
        assert iso.joliet_vd.volume_identifier.decode("utf-16_be").strip() == LABEL
        # the bundle, under every name a reader may use
        for where in ({"rr_path": f"/{BUNDLE_NAME}"}, {"joliet_path": f"/{BUNDLE_NAME}"},
                      {"iso_path": f"/{BUNDLE_NAME.upper()};1"}):
            assert _read(iso, **where) == bundle(files), where
        # the boot files, unchanged
        original = pycdlib.PyCdlib()
        original.open(str(src))
        try:
            for path in BOOT_FILES:
                new, old = _read(iso, rr_path=path), _read(original, rr_path=path)
                if path == "/isolinux/isolinux.bin":  # but for its boot info table (checked below)
                    new, old = new[:8] + new[24:], old[:8] + old[24:]
                assert new == old, path
        finally:
            original.close()
        # El Torito: the catalog, its boot image isolinux.bin loaded as 4 sectors, no emulation
        cat = iso.eltorito_boot_catalog
        assert cat is not None
        entry = cat.initial_entry
        assert entry.boot_indicator == 0x88 and entry.sector_count == 4 and entry.boot_media_type == 0
        boot_record = iso.get_record(rr_path="/isolinux/isolinux.bin")
        assert entry.load_rba == boot_record.extent_location()
        assert iso.get_record(rr_path="/isolinux/boot.cat").extent_location() == cat.extent_location()
    finally:
        iso.close()

    # isolinux finds itself through the boot info table: it must name where the file now is
    data = out.read_bytes()
    lba = entry.load_rba
    boot = data[lba * 2048:lba * 2048 + ISOLINUX.stat().st_size]
    pvd_lba, file_lba, length, csum = struct.unpack_from("<4I", boot, 8)
    assert (pvd_lba, file_lba, length) == (16, lba, len(boot))
    padded = boot + b"\0" * (-len(boot) % 4)
    assert csum == sum(struct.unpack_from(f"<{(len(padded) - 64) // 4}I", padded, 64)) & 0xFFFFFFFF
    # the ramdisk finds its config medium with blkid, by this label
    blkid = subprocess.run(["blkid", "-p", "-o", "export", str(out)], capture_output=True, text=True, check=True)
    assert f"LABEL={LABEL}" in blkid.stdout.splitlines() and "TYPE=iso9660" in blkid.stdout.splitlines()


def test_the_ramdisk_writer_makes_the_jobs_root_from_it(ramdisk: Path, key: HostKeyPair, tmp_path: Path) -> None:
    files = config_files(HostConfig("deploy-43", (MGMT,), (key,)))
    out = io.BytesIO()
    write_boot_iso(ramdisk_iso_path(ramdisk), files, out)
    iso = pycdlib.PyCdlib()
    iso.open_fp(out)
    got = _read(iso, rr_path=f"/{BUNDLE_NAME}")
    iso.close()
    root = tmp_path / "root"
    root.mkdir()
    writer.apply_bundle(str(root), got)
    assert (root / "etc/hostname").read_text() == "deploy-43\n"
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() == key.private


def test_the_ramdisk_iso_is_streamed_not_held_in_memory(tmp_path: Path, key: HostKeyPair) -> None:
    big = fake_ramdisk(tmp_path / "big", initrd_bytes=48 << 20)
    files = config_files(HostConfig("deploy-44", (MGMT,), (key,)))
    tracemalloc.start()
    try:
        write_boot_iso_file(ramdisk_iso_path(big), files, tmp_path / "boot.iso")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "boot.iso").stat().st_size > 48 << 20
    assert peak < 8 << 20, f"peak {peak >> 20} MiB of Python memory for a 48 MiB ISO"


def test_the_file_is_new_and_private_or_not_at_all(ramdisk: Path, key: HostKeyPair, tmp_path: Path) -> None:
    files = config_files(HostConfig("deploy-45", (MGMT,), (key,)))
    taken = tmp_path / "taken.iso"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        write_boot_iso_file(ramdisk_iso_path(ramdisk), files, taken)
    assert taken.read_bytes() == b"someone else's"
    link = tmp_path / "link.iso"
    link.symlink_to(tmp_path / "elsewhere.iso")
    with pytest.raises(FileExistsError):
        write_boot_iso_file(ramdisk_iso_path(ramdisk), files, link)
    assert not (tmp_path / "elsewhere.iso").exists()
    # a ramdisk ISO with nothing to boot: refused, and no half-written file with the key is left
    plain = tmp_path / "plain"
    (plain / "tree").mkdir(parents=True)
    (plain / "tree/readme").write_text("no boot\n")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(plain / "deploy-ramdisk.iso"), "-J", "-R",
                    str(plain / "tree")], check=True, capture_output=True)
    with pytest.raises(Unavailable) as err:
        write_boot_iso_file(plain / "deploy-ramdisk.iso", files, tmp_path / "dud.iso")
    assert err.value.code == "ramdisk.not_bootable"
    assert not (tmp_path / "dud.iso").exists()
    # a "ramdisk" that already carries a config (a boot ISO fed back in): refused, not doubled
    once = write_boot_iso_file(ramdisk_iso_path(ramdisk), files, tmp_path / "boot.iso")
    with pytest.raises(Unavailable) as err:
        write_boot_iso_file(once, files, tmp_path / "dud.iso")
    assert err.value.code == "ramdisk.corrupt" and not (tmp_path / "dud.iso").exists()
    (tmp_path / "junk.iso").write_bytes(b"\0" * 65536)
    with pytest.raises(Unavailable) as err:
        write_boot_iso_file(tmp_path / "junk.iso", files, tmp_path / "dud.iso")
    assert err.value.code == "ramdisk.corrupt" and not (tmp_path / "dud.iso").exists()


def test_ramdisk_iso_path_checks_the_build(ramdisk: Path, tmp_path: Path) -> None:
    assert ramdisk_iso_path(ramdisk) == ramdisk / "deploy-ramdisk.iso"
    with pytest.raises(Unavailable) as err:
        ramdisk_iso_path(tmp_path)
    assert err.value.code == "ramdisk.missing" and err.value.hint
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "ramdisk.json").write_bytes((ramdisk / "ramdisk.json").read_bytes())
    with pytest.raises(Unavailable) as err:
        ramdisk_iso_path(copy)
    assert err.value.code == "ramdisk.missing"
    with open(copy / "deploy-ramdisk.iso", "wb") as f:
        f.truncate(2048)  # half copied
    with pytest.raises(Unavailable) as err:
        ramdisk_iso_path(copy)
    assert err.value.code == "ramdisk.corrupt"
