"""The per-job boot ISO of a deploy: the shared deploy ramdisk ISO (images/build-ramdisk.sh: isolinux
El Torito boot, ``vmlinuz``, ``initrd.zst``) plus ``provcfg.json`` at its root (the bundle of
``core/host_config.py``: the ramdisk's hostname, the job's authorized key and the SSH host key the
service generated), relabelled ``PROVCFG`` in its primary and Joliet volume descriptors.

Why one ISO and not the ramdisk ISO plus a second config CD: a BMC offers one virtual CD (the lab's
sushy-emulator replaces the domain's cdrom devices on every insert; many real BMCs have a single
virtual media slot). The ramdisk's ``provisioner-provcfg.service`` looks for the label ``PROVCFG``
on whatever device carries it, so the CD it booted from is also where it finds its config: the
shared ramdisk image holds no secret and needs no rebuild per job.

Made with ``pycdlib`` (pure Python): the ramdisk ISO is opened (only its metadata is read), the
bundle is added from memory and the volume written out; pycdlib copies the other files' bytes from
the ramdisk ISO in blocks (one 80 MB ISO is never held in memory) and rewrites the El Torito boot
info table of isolinux.bin for the new layout. The private key exists only in memory and in the
output file, which the caller creates private (``write_boot_iso_file``: mode 0600, never replaced).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException
from pycdlib.utils import encode_space_pad

from provisioner.core.errors import Unavailable
from provisioner.core.host_config import ConfigFile, bundle

LABEL = "PROVCFG"
BUNDLE_NAME = "provcfg.json"
ISO_NAME = "deploy-ramdisk.iso"
_HINT = "build it with images/build-ramdisk.sh (as root) and point the worker at its output dir"


def ramdisk_iso_path(ramdisk_dir: Path) -> Path:
    """The deploy ramdisk ISO of a build dir (``images/build-ramdisk.sh``'s output), checked against
    the size its ``ramdisk.json`` records (a half-copied or replaced ISO is refused, not booted)."""
    try:
        info = json.loads((ramdisk_dir / "ramdisk.json").read_text())
        want = int(info["files"][ISO_NAME]["size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Unavailable("ramdisk.missing", f"no usable ramdisk.json in {ramdisk_dir}: {exc}", hint=_HINT) from exc
    iso = ramdisk_dir / ISO_NAME
    try:
        size = iso.stat().st_size
    except OSError as exc:
        raise Unavailable("ramdisk.missing", f"the deploy ramdisk ISO is missing: {exc}", hint=_HINT) from exc
    if size != want:
        raise Unavailable("ramdisk.corrupt", f"{iso} has {size} bytes, its ramdisk.json says {want}", hint=_HINT)
    return iso


def write_boot_iso(ramdisk_iso: Path, files: list[ConfigFile], out: BinaryIO) -> None:
    """Write the per-job boot ISO to ``out`` (a seekable binary file: pycdlib places extents)."""
    data = bundle(files)
    iso = pycdlib.PyCdlib()
    with open(ramdisk_iso, "rb") as src:
        try:
            iso.open_fp(src)
        except PyCdlibException as exc:
            raise Unavailable("ramdisk.corrupt", f"{ramdisk_iso} is not an ISO 9660 image: {exc}",
                              hint=_HINT) from exc
        try:
            boot = iso.eltorito_boot_catalog
            if boot is None or boot.initial_entry.inode is None or boot.initial_entry.inode.boot_info_table is None:
                # Without a boot info table pycdlib could not repoint isolinux.bin at itself after
                # moving it, and the CD would not boot: refuse rather than hand out a dud.
                raise Unavailable("ramdisk.not_bootable",
                                  f"{ramdisk_iso} has no El Torito boot image with a boot info table", hint=_HINT)
            # pycdlib has no setter for the label; both descriptors carry it and blkid may read
            # either (Joliet's when present), so both say PROVCFG.
            for vd in (iso.pvd, iso.joliet_vd):
                if vd is not None:
                    vd.volume_identifier = encode_space_pad(LABEL.encode(), 32, vd.encoding)
            rock_ridge = iso.has_rock_ridge()
            iso_name = f"/{BUNDLE_NAME.upper()};1"
            names = {name for child in iso.list_children(iso_path="/")
                     for name in (child.file_identifier(), child.rock_ridge.name() if child.rock_ridge else b"")}
            if iso_name[1:].encode() in names or BUNDLE_NAME.encode() in names:
                # pycdlib would add a second one; the ramdisk would read whichever it met first
                raise Unavailable("ramdisk.corrupt", f"{ramdisk_iso} already carries a {BUNDLE_NAME}",
                                  hint=_HINT + " (the shared ramdisk ISO, not a boot ISO made from it)")
            try:
                iso.add_fp(io.BytesIO(data), len(data), iso_name,
                           rr_name=BUNDLE_NAME if rock_ridge else None,
                           joliet_path=f"/{BUNDLE_NAME}" if iso.has_joliet() else None,
                           file_mode=0o100400 if rock_ridge else None)
            except PyCdlibException as exc:
                raise Unavailable("ramdisk.corrupt", f"{ramdisk_iso} cannot take the job's config: {exc}",
                                  hint=_HINT) from exc
            iso.write_fp(out)
        finally:
            iso.close()


def write_boot_iso_file(ramdisk_iso: Path, files: list[ConfigFile], path: Path) -> Path:
    """``write_boot_iso`` into a new file ``path``, created 0600 (it holds the job's host key) and
    never through a symlink or over an existing file; removed again when the write fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            write_boot_iso(ramdisk_iso, files, out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
