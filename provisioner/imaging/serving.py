"""What the image phase of a job gets: the parameters of ``provisioner_image_write``.

The engine calls ``image_spec_for`` when it builds the extravars of the "image" phase and passes the
result as ``provisioner_image`` (``request_params["image_spec"]`` in ``workers.inventory.extravars_for``):

    {url, token, sha256, bmap, compression, target, name, version}

* ``url`` is ``public_url`` + ``/v1/images/{id}/content``: what the host can reach;
* ``token`` is a per-job image token (``tokens.py``) valid for this image only, while the job runs;
* ``bmap`` is the block-map dict (the module checks every range's sha256), ``compression`` "none"
  (the writer fetches data ranges in parallel) or "zstd" (one stream);
* ``target`` is the device to write: the root disk the inspect phase chose, on a host enrolled by
  its BMC, in the deploy ramdisk (``image_target_for``).

A request without an image gives None (the phase skips itself: the host keeps its installed OS).
New requests name a catalogue image or none (POST /v1/requests refuses other names with
``image.unknown``); a name outside the catalogue, left by requests accepted before that rule, also
gives None.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from provisioner.core.pipeline import BARE_METAL_DRIVER
from provisioner.imaging import tokens
from provisioner.imaging.catalogue import ImageUnavailable, image_by_name, stored_file
from provisioner.store.config import Settings
from provisioner.store.models import Host, Job


def root_disk_target(host: Host) -> str | None:
    """The root disk the inspect phase chose for a host enrolled by its BMC (/dev/...), or None."""
    root = (host.hardware or {}).get("root_disk")
    if isinstance(root, dict):
        root = root.get("path") or root.get("name")
    if not isinstance(root, str) or not root:
        return None
    return root if root.startswith("/dev/") else f"/dev/{root}"


def image_target_for(host: Host) -> str | None:
    """The root disk of a host enrolled by its BMC (a whole-disk image, written by the deploy ramdisk);
    None for any other host: nothing writes an image under a running OS (services/requests.py)."""
    return root_disk_target(host) if host.driver == BARE_METAL_DRIVER else None


def image_spec_for(session: Session, settings: Settings, job: Job, request_image_name: str | None,
                   target_device: str | None, *, ttl_s: float = tokens.DEFAULT_TTL_S) -> dict[str, Any] | None:
    """Module params for the image phase, or None when the request names no catalogue image.

    Raises ImageUnavailable (message fit for the job's error) when the image is in the catalogue
    but must not be written: flagged, retired, or its bytes are gone; or when there is no target.
    Deprecated images are still written for requests accepted before the deprecation.
    """
    if not request_image_name:
        return None
    img = image_by_name(session, request_image_name)
    if img is None:
        return None
    if img.flagged:
        raise ImageUnavailable(f"image {img.name} is flagged as corrupt: {img.flag_reason}")
    if img.channel == "retired":
        raise ImageUnavailable(f"image {img.name} is retired")
    if stored_file(settings, img) is None:
        raise ImageUnavailable(f"image {img.name}: its stored bytes are missing from the image store")
    if not target_device:
        raise ImageUnavailable(f"no target device to write image {img.name} to (no raid array, no data disk)")
    token = tokens.issue(settings, job_id=job.id or 0, image_id=img.id or 0, ttl_s=ttl_s)
    return {
        "url": f"{settings.effective_public_url}/v1/images/{img.id}/content",
        "token": token,
        "sha256": img.sha256,
        "bmap": img.bmap,
        "compression": img.stored_compression,
        "target": target_device,
        "name": img.name,
        "version": img.version,
        # A canary must prove the written root is a usable OS: the image phase mounts it and reads
        # its os-release, and fails without one.
        "require_os_release": img.canary_job_id == job.id,
    }
