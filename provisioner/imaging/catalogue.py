"""The image catalogue's rules: channel moves, who may request what, flagging, retiring bytes.

Channel moves (``promote``)::

    candidate ──(canary passed)──► stable ──► deprecated ──► retired

* candidate → stable needs ``canary_result.passed`` (a canary install through the normal pipeline)
  and an unflagged image;
* retired images keep their row (the name stays taken: catalogue names are never reused) and lose
  their bytes as soon as no host in state active/provisioning was requested with the image
  (``purge_bytes``; ``POST /v1/images/{id}/purge`` retries later).

Requests (``check_requestable``): a request names a catalogue image or none at all (no image: the
host keeps its installed OS and the image phase writes nothing). A name outside the catalogue is
refused with ``image.unknown``, listing the images the requester can request. Catalogue images must
be stable (imagers may also request candidates, the guardrails then restrict them to lab pools), not
deprecated or retired, not flagged, and their bytes must exist.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from provisioner.core import guardrails
from provisioner.core.errors import Conflict, Invalid, NotFound
from provisioner.services import audit
from provisioner.store.config import Settings
from provisioner.store.image_models import Image
from provisioner.store.models import Host, HostRequest

TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"stable"}),
    "stable": frozenset({"deprecated"}),
    "deprecated": frozenset({"retired"}),
    "retired": frozenset(),
}
# Hosts in these states may still need the image's bytes (a provision job in flight, or a re-image).
USING_STATES = ("active", "provisioning")
TMP_DIR = ".tmp"
CANARY_HINT = "run a canary: POST /v1/images/{id}/canary"
# How many requestable names an image.unknown refusal lists (the catalogue can be long).
REQUESTABLE_SHOWN = 20


class ImageUnavailable(Conflict):
    """A job names a catalogue image that can't be written now (flagged, retired, bytes missing)."""

    def __init__(self, detail: str) -> None:
        super().__init__("image.unavailable", detail, hint="GET /v1/images lists the images you can request")


def store_dir(settings: Settings) -> Path:
    return Path(settings.effective_image_store)


def stored_file(settings: Settings, img: Image) -> Path | None:
    """The image's bytes on disk, or None when they are gone."""
    if not img.stored_path:
        return None
    path = store_dir(settings) / img.stored_path
    return path if path.is_file() else None


def resolve_in_store(settings: Settings, rel: str) -> Path:
    """A path given relative to the store, refused when it leaves the store (.., symlinks, absolute)."""
    store = store_dir(settings).resolve()
    if not rel or rel.startswith("/") or "\x00" in rel:
        raise Invalid("image.path_invalid", f"{rel!r} must be a path relative to the image store",
                      hint=f"copy the file into {store} and give its path relative to it")
    candidate = (store / rel)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(store) or resolved == store:
        raise Invalid("image.path_outside_store", f"{rel!r} resolves outside the image store",
                      hint=f"copy the file into {store} (no '..', no symlinks leading out)")
    if resolved.relative_to(store).parts[0] == TMP_DIR:
        raise Invalid("image.path_invalid", f"{rel!r} is an upload in progress",
                      hint="register a finished file, not one under .tmp/")
    if not resolved.is_file():
        raise NotFound("image.file_not_found", f"{rel!r} is not a regular file in the image store",
                      hint=f"copy the file into {store} first")
    return resolved


def snapshot(img: Image) -> dict[str, Any]:
    return {"name": img.name, "version": img.version, "channel": img.channel, "sha256": img.sha256,
            "size": img.size, "flagged": img.flagged, "stored_path": img.stored_path,
            "stored_compression": img.stored_compression}


def image_by_name(session: Session, name: str) -> Image | None:
    return session.exec(select(Image).where(Image.name == name)).first()


def check_promotion(img: Image, target: str) -> None:
    """Raises Conflict unless ``img`` may move to channel ``target``."""
    allowed = TRANSITIONS.get(img.channel, frozenset())
    if target not in allowed:
        nxt = ", ".join(sorted(allowed)) or "none (retired is final)"
        raise Conflict("image.illegal_promotion", f"image {img.name} cannot go from {img.channel} to {target}",
                      hint=f"from {img.channel} the image can go to: {nxt}", current=img.channel, target=target)
    if target == "stable":
        if img.flagged:
            raise Conflict("image.flagged", f"image {img.name} is flagged: {img.flag_reason}",
                          hint=f"re-verify it with POST /v1/images/{img.id}/verify, then run a new canary")
        result = img.canary_result or {}
        if not result.get("passed"):
            why = ("no canary ran yet" if not img.canary_job_id else
                   "the canary is still running" if not result else
                   f"the canary (job {result.get('job_id')}) failed: {result.get('reason') or result.get('error')}")
            raise Conflict("image.canary_required",
                          f"image {img.name} needs a passing canary install before it becomes stable: {why}",
                          hint=CANARY_HINT.format(id=img.id), canary_job_id=img.canary_job_id)


def hosts_using(session: Session, name: str) -> list[Host]:
    """Hosts requested with image ``name`` that are being provisioned or are in use."""
    q = (select(Host).join(HostRequest, col(Host.request_id) == HostRequest.id)
         .where(HostRequest.image == name, col(Host.state).in_(USING_STATES)))
    return list(session.exec(q).all())


def purge_bytes(session: Session, settings: Settings, img: Image) -> dict[str, Any]:
    """Remove a retired image's bytes unless a host still uses it; returns a report (no commit)."""
    if img.channel != "retired":
        return {"bytes_removed": False, "reason": f"image is {img.channel}, not retired"}
    if not img.stored_path:
        return {"bytes_removed": True, "reason": "already removed"}
    users = hosts_using(session, img.name)
    if users:
        return {"bytes_removed": False, "reason": "hosts still use the image",
                "kept_for_hosts": [{"id": h.id, "name": h.name, "state": h.state} for h in users]}
    path = store_dir(settings) / img.stored_path
    path.unlink(missing_ok=True)
    removed = img.stored_path
    img.stored_path = None
    session.add(img)
    return {"bytes_removed": True, "removed": removed}


def flag_image(session: Session, image_id: int, reason: str, *, actor: str = "engine",
               actor_id: int | None = None, request_id: str | None = None) -> Image | None:
    """Mark an image as corrupt (the writer's hashes did not match). Audited; the caller commits."""
    img = session.get(Image, image_id)
    if img is None:
        return None
    before = snapshot(img)
    img.flagged = True
    img.flag_reason = reason[:2000]
    session.add(img)
    audit.record(session, actor_id=actor_id, actor_name=actor, action="image.flag", object_type="image",
                 object_id=img.id, before=before, after=snapshot(img) | {"reason": img.flag_reason},
                 request_id=request_id)
    return img


def requestable_names(session: Session, channels: Collection[str], *, limit: int = REQUESTABLE_SHOWN,
                      ) -> tuple[list[str], int]:
    """The first ``limit`` names (sorted) of the images a request may name from ``channels``
    (unflagged, bytes stored), and how many there are in all."""
    where = (col(Image.channel).in_(sorted(channels)), col(Image.flagged).is_(False),
             col(Image.stored_path).is_not(None))
    total = session.exec(select(func.count()).select_from(Image).where(*where)).one()
    names = session.exec(select(Image.name).where(*where).order_by(col(Image.name)).limit(limit)).all()
    return list(names), int(total)


class ImageUnknown(Invalid):
    """A request names an image the catalogue does not hold."""

    def __init__(self, name: str, names: list[str], total: int) -> None:
        if names:
            more = f" (first {len(names)} of {total})" if total > len(names) else ""
            listed = f"images you can request{more}: {', '.join(names)}"
        else:
            listed = "there is no image you can request yet"
        super().__init__("image.unknown", f"image {name!r} is not in the catalogue",
                         hint=f"{listed}; or leave the image out to keep the host's installed OS",
                         requestable=names, requestable_total=total)


def check_requestable(session: Session, name: str, role: str,
                      channels: Collection[str] = ("stable",)) -> Invalid | None:
    """Why a host request for image ``name`` by ``role`` must be refused, or None.

    ``channels`` are the ones the requester may deploy on the request's pool (the policy's
    ``guardrails.allowed_channels``): an unknown name's refusal lists the images from them.
    Wire it into POST /v1/requests before allocation.
    """
    # Every host request passes here: leave the block map (can be thousands of ranges) unread.
    img = session.exec(select(Image).where(Image.name == name).options(defer(Image.bmap))).first()  # type: ignore[arg-type]
    if img is None:
        return ImageUnknown(name, *requestable_names(session, channels))
    stable_hint = "GET /v1/images lists the images you can request"
    if img.flagged:
        return Invalid("image.flagged", f"image {name} is flagged as corrupt: {img.flag_reason}",
                       hint=f"choose another image ({stable_hint}); the imaging team re-verifies flagged images")
    if img.channel == "retired":
        return Invalid("image.retired", f"image {name} is retired", hint=stable_hint)
    if img.channel == "deprecated":
        return Invalid("image.deprecated", f"image {name} is deprecated and takes no new requests",
                       hint=f"request its successor; {stable_hint}")
    if img.channel == "candidate" and role != "imager" and "candidate" not in channels:
        return Invalid("image.channel_not_allowed",
                       f"image {name} is a candidate: only the imaging team installs it (on lab pools)",
                       hint=f"wait until it is promoted to stable; {stable_hint}")
    if not img.stored_path:
        return Invalid("image.unavailable", f"image {name} has no stored bytes", hint=stable_hint)
    return None


def catalogue_image_ref(session: Session, name: str) -> guardrails.ImageRef | None:
    """The guardrails' view of a catalogue image (None for names outside the catalogue, which
    ``check_requestable`` refuses before the guardrails run).

    POST /v1/requests judges the channel policy (customers: stable; imagers: candidates on lab pools)
    with it, so the record's channel counts, never the name.
    """
    img = image_by_name(session, name)
    if img is None:
        return None
    return guardrails.ImageRef(name=img.name, channel=img.channel, deprecated=img.channel in ("deprecated", "retired"))


def visible_to(role: str, img: Image) -> bool:
    """Customers see stable images only; every other role sees the whole catalogue."""
    return role != "customer" or img.channel == "stable"

