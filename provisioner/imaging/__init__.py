"""Disk image handling: block maps, format conversion for the publish path.

The writer that runs on target hosts is the Ansible module
``playbooks/library/provisioner_image_write.py``; it is standalone (stdlib + zstandard) and mirrors
the bmap format defined in ``bmap.py``.
"""

from provisioner.imaging.bmap import (
    BLOCK_SIZE,
    BMAP_VERSION,
    BmapBuilder,
    bmap_from_fd,
    bmap_from_file,
    data_bytes,
    validate_bmap,
)

__all__ = [
    "BLOCK_SIZE",
    "BMAP_VERSION",
    "BmapBuilder",
    "bmap_from_fd",
    "bmap_from_file",
    "data_bytes",
    "validate_bmap",
]
