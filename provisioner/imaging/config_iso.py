"""The per-job config ISO of the deploy ramdisk: a tiny ISO 9660 volume labelled ``PROVCFG``
holding one file, ``provcfg.json`` (the bundle of ``core/host_config.py``: the ramdisk's hostname,
the job's authorized key and the SSH host key the service generated). Inserted as a second virtual
CD next to the shared ramdisk ISO, so no secret is ever baked into the shared image; the ramdisk's
``provisioner-provcfg.service`` finds it by its label and applies it before sshd starts.

Built with ``pycdlib`` (pure Python) rather than ``xorriso``: in memory, no temporary file holding
the private key, and no subprocess or extra Debian package on every worker machine (xorriso
stays a build-time tool of images/build-ramdisk.sh).
"""

from __future__ import annotations

import io

import pycdlib

from provisioner.core.host_config import ConfigFile, bundle

LABEL = "PROVCFG"
BUNDLE_NAME = "provcfg.json"


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
