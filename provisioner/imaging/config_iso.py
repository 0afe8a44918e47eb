"""A config-only PROVCFG ISO: a tiny ISO 9660 volume labelled ``PROVCFG`` holding one file,
``provcfg.json`` (the bundle of ``core/host_config.py``), for setups that can attach a second medium
next to the shared ramdisk ISO (plain QEMU in tests). A deploy through a BMC, which offers one virtual
CD, uses the per-job boot ISO instead (``boot_iso.py``: the ramdisk ISO with the same file and label).

Built with ``pycdlib`` in memory: no temporary file holding the private key.
"""

from __future__ import annotations

import io

import pycdlib

from provisioner.core.host_config import ConfigFile, bundle
from provisioner.imaging.boot_iso import BUNDLE_NAME, LABEL

__all__ = ["BUNDLE_NAME", "LABEL", "config_iso"]


def config_iso(files: list[ConfigFile]) -> bytes:
    """The ISO's bytes (Rock Ridge + Joliet names, so every OS mounts ``provcfg.json`` as such)."""
    data = bundle(files)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, rock_ridge="1.09", joliet=3,
            app_ident_str="provisioner per-job config")
    iso.add_fp(io.BytesIO(data), len(data), "/PROVCFG.JSON;1", rr_name=BUNDLE_NAME,
               joliet_path=f"/{BUNDLE_NAME}", file_mode=0o100400)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
