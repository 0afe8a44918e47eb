"""The image catalogue: publish (streamed upload or a file in the store), list, promote through the
channels, canary installs, flag / re-verify, and serving the bytes to hosts (Range, per-job tokens).

Who: imagers and admins publish, promote, canary, flag and verify; every role reads the catalogue
(customers only see stable images); image content and block maps are read with a per-job image
token sent in the Authorization header (never the query string), not an API token
(``provisioner/imaging/tokens.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.requests import ClientDisconnect

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.image_schemas import (
    CanaryIn,
    CanaryOut,
    FlagIn,
    ImageOut,
    PromoteIn,
    PromoteOut,
    RegisterIn,
    VerifyOut,
)
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found, problem_response
from provisioner.api.requests import phase_params
from provisioner.api.schemas import Page, RequestIn
from provisioner.core.errors import Invalid
from provisioner.core.permissions import Role
from provisioner.core.timeutil import utcnow
from provisioner.imaging import ingest, tokens
from provisioner.imaging.bmap import bmap_from_file, data_bytes
from provisioner.imaging.canary import CANARY_USER, start_canary, throwaway_public_key
from provisioner.imaging.catalogue import (
    TMP_DIR,
    check_promotion,
    flag_image,
    image_by_name,
    purge_bytes,
    resolve_in_store,
    snapshot,
    store_dir,
    stored_file,
    visible_to,
)
from provisioner.services import audit, webhooks
from provisioner.services.admission import load_policy
from provisioner.store.config import Settings, get_settings
from provisioner.store.db import session_scope
from provisioner.store.image_models import Channel, Image, ImageFormat
from provisioner.store.models import Job, Tenant

router = APIRouter(prefix="/v1/images", tags=["images"])

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
LABEL_RE = r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$"


image_writer = require("images:write")
image_reader = require("images:read")


def upload_writer(p: Annotated[Principal, Depends(image_writer)], s: DbSession) -> Principal:
    s.close()  # an upload can take minutes: don't hold a DB connection while bytes stream in
    return p


def image_out(img: Image) -> ImageOut:
    data = img.model_dump(exclude={"bmap"})
    data["data_bytes"] = data_bytes(img.bmap) if img.bmap else 0
    data["ranges"] = len((img.bmap or {}).get("ranges") or [])
    return ImageOut.model_validate(data)


def visible_image(s: Session, p: Principal, image_id: int) -> Image:
    img = s.get(Image, image_id)
    if img is None or not visible_to(p.role, img):
        raise not_found("image", image_id)
    return img


def _name_taken(name: str) -> Problem:
    return Problem(409, "image.exists", f"an image named {name!r} is already in the catalogue",
                   hint="catalogue names are never reused: publish the new build under a new name "
                        "(e.g. with its version), then deprecate the old one")


def _allocated(path: Any) -> int:
    st = os.stat(path)
    return st.st_blocks * 512


def _insert(settings: Settings, p: Principal, prepared: ingest.Prepared, *, name: str, version: str,
            os_name: str, os_version: str, action: str, final_rel: str, placed: bool) -> Image:
    """Row + audit entry, committed; a placed file is removed again when the insert fails."""
    store = store_dir(settings)
    try:
        with session_scope(settings) as s:
            img = Image(name=name, version=version, os_name=os_name, os_version=os_version,
                        format_in=prepared.format_in, channel="candidate", size=prepared.size,
                        sha256=prepared.sha256, bmap=prepared.bmap, stored_path=final_rel,
                        stored_compression=prepared.compression, stored_bytes=_allocated(store / final_rel),
                        published_by=p.name)
            s.add(img)
            try:
                s.flush()
            except IntegrityError:
                s.rollback()
                raise _name_taken(name) from None
            audit.record(s, actor_id=p.user_id, actor_name=p.name, action=action, object_type="image",
                         object_id=img.id, after=snapshot(img) | {"format_in": img.format_in},
                         request_id=p.request_id)
            s.commit()
            return img
    except BaseException:
        if placed:
            (store / final_rel).unlink(missing_ok=True)
        raise


def _publish_prepared(settings: Settings, p: Principal, prepared: ingest.Prepared, meta: dict[str, str],
                      expected_sha256: str | None, action: str) -> Image:
    if expected_sha256 and expected_sha256.lower() != prepared.sha256:
        raise Problem(422, "image.checksum_mismatch",
                      f"the raw content's sha256 is {prepared.sha256}, not the expected {expected_sha256.lower()}",
                      hint="the file was damaged in transit or is not the build you meant; nothing was kept",
                      expected=expected_sha256.lower(), actual=prepared.sha256)
    with session_scope(settings) as s:
        if image_by_name(s, meta["name"]) is not None:
            raise _name_taken(meta["name"])
    final_rel = meta["name"] + prepared.suffix
    ingest.place(prepared, store_dir(settings) / final_rel)
    return _insert(settings, p, prepared, action=action, final_rel=final_rel, placed=True, **meta)


@router.post(
    "", status_code=201, response_model=ImageOut,
    summary="Publish an image: stream the file as the request body (raw, raw.zst or qcow2)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def publish(
    *, request: Request,
    name: Annotated[str, Query(min_length=1, max_length=64, pattern=NAME_RE, description="e.g. debian-12-minimal")],
    version: Annotated[str, Query(min_length=1, max_length=64, pattern=LABEL_RE)],
    os_name: Annotated[str, Query(min_length=1, max_length=64, pattern=LABEL_RE)],
    os_version: Annotated[str, Query(min_length=1, max_length=64, pattern=LABEL_RE)],
    fmt: Annotated[ImageFormat, Query(alias="format", description="raw, raw.zst or qcow2")],
    expected_sha256: Annotated[str | None, Query(
        max_length=64, pattern=r"^[0-9a-fA-F]{64}$",
        description="sha256 of the RAW content; a mismatch keeps nothing")] = None,
    p: Annotated[Principal, Depends(upload_writer)],
) -> ImageOut:
    settings = get_settings()
    ingest.check_format(fmt)
    limit = settings.image_max_bytes
    declared_h = request.headers.get("content-length")
    declared = int(declared_h) if declared_h and declared_h.isdigit() else None
    if declared is not None and declared > limit:
        raise ingest.too_large(limit, f"the upload ({declared} bytes)")

    def name_free() -> None:
        with session_scope(settings) as s:
            if image_by_name(s, name) is not None:
                raise _name_taken(name)

    await run_in_threadpool(name_free)
    tmp_dir = store_dir(settings) / TMP_DIR
    await run_in_threadpool(ingest.sweep_stale, tmp_dir)
    tmp = ingest.new_temp(tmp_dir, "." + fmt)
    temps = [tmp]
    try:
        try:
            received, raw_bmap = await ingest.receive(request.stream(), tmp, fmt, limit)
        except ClientDisconnect:
            raise Problem(400, "image.upload_truncated", "the client disconnected before the upload was complete",
                          hint="upload again; nothing was kept") from None
        if declared is not None and received != declared:
            raise Problem(400, "image.upload_truncated",
                          f"received {received} bytes but Content-Length announced {declared}",
                          hint="upload again; nothing was kept", received=received, declared=declared)
        prepared = await run_in_threadpool(ingest.prepare_upload, fmt, tmp, tmp_dir, raw_bmap, limit)
        temps.extend(prepared.temps)
        meta = {"name": name, "version": version, "os_name": os_name, "os_version": os_version}
        img = await run_in_threadpool(_publish_prepared, settings, p, prepared, meta, expected_sha256,
                                      "image.publish")
    finally:
        ingest.remove(temps)  # the published file is a hard link of its own: removing temps keeps it
    return image_out(img)


@router.post("/register", status_code=201, response_model=ImageOut,
             summary="Publish a file that is already in the image store (path relative to the store)")
def register(body: RegisterIn, p: Annotated[Principal, Depends(image_writer)], s: DbSession) -> ImageOut:
    settings = get_settings()
    path = resolve_in_store(settings, body.path)
    rel = str(path.relative_to(store_dir(settings).resolve()))
    if image_by_name(s, body.name) is not None:
        raise _name_taken(body.name)
    user = s.exec(select(Image).where(Image.stored_path == rel)).first()
    if user is not None:
        raise Problem(409, "image.file_in_use", f"{rel} is already the stored file of image {user.name}",
                      hint="copy the file under another name to publish it again")
    s.close()
    prepared = ingest.prepare_existing(path, store_dir(settings) / TMP_DIR, settings.image_max_bytes)
    meta = {"name": body.name, "version": body.version, "os_name": body.os_name, "os_version": body.os_version}
    try:
        if prepared.temps:  # converted (qcow2): the raw result is published like an upload
            img = _publish_prepared(settings, p, prepared, meta, body.expected_sha256, "image.register")
        else:
            if body.expected_sha256 and body.expected_sha256.lower() != prepared.sha256:
                raise Problem(422, "image.checksum_mismatch",
                              f"the raw content's sha256 is {prepared.sha256}, not the expected "
                              f"{body.expected_sha256.lower()}", hint="check the file; nothing was registered",
                              expected=body.expected_sha256.lower(), actual=prepared.sha256)
            img = _insert(settings, p, prepared, action="image.register", final_rel=rel, placed=False, **meta)
    finally:
        ingest.remove(prepared.temps)
    return image_out(img)


@router.get("", response_model=Page[ImageOut], summary="List images (customers see stable images only)")
def list_images(*, channel: Channel | None = None,
                name: Annotated[str | None, Query(max_length=64)] = None,
                pg: Paging, p: Annotated[Principal, Depends(image_reader)],
                s: DbSession) -> dict:
    q = select(Image)
    if p.role == Role.customer:
        q = q.where(Image.channel == "stable")
    if channel:
        q = q.where(Image.channel == channel)
    if name:
        q = q.where(Image.name == name)
    items = s.exec(q.order_by(col(Image.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": [image_out(i) for i in items], **page_meta(s, q, pg)}


@router.get("/{image_id}", response_model=ImageOut, summary="Show an image")
def get_image(image_id: PathId, p: Annotated[Principal, Depends(image_reader)], s: DbSession) -> ImageOut:
    return image_out(visible_image(s, p, image_id))


@router.post("/{image_id}/promote", response_model=PromoteOut,
             summary="Move an image: candidate→stable (needs a passed canary), stable→deprecated, deprecated→retired")
def promote(image_id: PathId, body: PromoteIn, p: Annotated[Principal, Depends(image_writer)],
            s: DbSession) -> PromoteOut:
    settings = get_settings()
    img = visible_image(s, p, image_id)
    check_promotion(img, body.to)
    before = snapshot(img)
    img.channel = body.to
    img.promoted_at = utcnow()
    s.add(img)
    report = purge_bytes(s, settings, img) if body.to == "retired" else None
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="image.promote", object_type="image",
                 object_id=img.id, before=before,
                 after=snapshot(img) | {"reason": body.reason} | ({"purge": report} if report else {}),
                 request_id=p.request_id)
    event = {"stable": "image.promoted", "deprecated": "image.deprecated"}.get(body.to)
    if event is not None:
        # The catalogue is shared: every tenant subscribed to the event hears of it.
        webhooks.emit(s, event, {"image_id": img.id, "name": img.name, "version": img.version,
                                 "channel": img.channel, "reason": body.reason}, tenant_id=None)
    s.commit()
    out = PromoteOut.model_validate(image_out(img).model_dump() | {"purge": report})
    return out


@router.post("/{image_id}/purge", response_model=PromoteOut,
             summary="Remove a retired image's bytes once no active or provisioning host uses it")
def purge(image_id: PathId, p: Annotated[Principal, Depends(image_writer)], s: DbSession) -> PromoteOut:
    img = visible_image(s, p, image_id)
    if img.channel != "retired":
        raise Problem(409, "image.not_retired", f"image {img.name} is {img.channel}",
                      hint="only retired images lose their bytes: deprecate, then retire it first")
    before = snapshot(img)
    report = purge_bytes(s, get_settings(), img)
    if not report["bytes_removed"]:
        raise Problem(409, "image.in_use", f"image {img.name} is still used by {len(report['kept_for_hosts'])} host(s)",
                      hint="retry once those hosts are released", kept_for_hosts=report["kept_for_hosts"])
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="image.purge", object_type="image",
                 object_id=img.id, before=before, after=snapshot(img) | {"purge": report}, request_id=p.request_id)
    s.commit()
    return PromoteOut.model_validate(image_out(img).model_dump() | {"purge": report})


@router.post("/{image_id}/canary", status_code=202, response_model=CanaryOut,
             summary="Install a candidate image on one lab host through the normal provisioning pipeline",
             description="The canary takes a host enrolled by its BMC in a lab pool: the deploy ramdisk writes "
                         "the image onto its root disk, the host boots it, and the canary passes only when the "
                         "booted host reports this image's identity file over SSH. A lab pool with no host "
                         "enrolled by its BMC is 409 `image.needs_bmc`; all of them taken, 409 "
                         "`capacity.insufficient`.")
def canary(*, image_id: PathId, body: CanaryIn | None = None, p: Annotated[Principal, Depends(image_writer)],
           s: DbSession) -> CanaryOut:
    body = body or CanaryIn()
    settings = get_settings()
    img = visible_image(s, p, image_id)
    if img.channel != "candidate":
        raise Problem(409, "image.not_candidate", f"image {img.name} is {img.channel}; canaries are for candidates",
                      hint="publish a new build as a candidate to test it")
    if img.flagged:
        raise Problem(409, "image.flagged", f"image {img.name} is flagged: {img.flag_reason}",
                      hint=f"re-verify it first: POST /v1/images/{img.id}/verify")
    if stored_file(settings, img) is None:
        raise Problem(409, "image.unavailable", f"image {img.name} has no stored bytes", hint="publish it again")
    if img.canary_job_id is not None:
        running = s.get(Job, img.canary_job_id)
        if running is not None and running.status in ("queued", "running"):
            raise Problem(409, "image.canary_running",
                          f"canary job {running.id} of image {img.name} is {running.status}",
                          hint=f"watch it with GET /v1/jobs/{running.id}; cancel it to start another",
                          job_id=running.id)
    tenant_id = p.tenant_id
    if body.tenant_id is not None and body.tenant_id != p.tenant_id:
        if p.scoped:
            raise Problem(422, "image.canary_tenant", "you can only run canaries in your own tenant",
                          hint="leave tenant_id out")
        tenant_id = body.tenant_id
    if tenant_id is None:
        raise Problem(422, "image.canary_tenant", "the canary host needs a tenant and your user has none",
                      hint="pass tenant_id (the tenant that will own the canary host and its request)")
    if s.get(Tenant, tenant_id) is None:
        raise not_found("tenant", tenant_id)
    before = snapshot(img)
    defaults = RequestIn(image=img.name, pool=body.pool, customer_user=CANARY_USER,
                         ssh_public_key=body.ssh_public_key or throwaway_public_key())
    req, job, host = start_canary(s, settings, p, img=img, pool=body.pool, tenant_id=tenant_id,
                                  params=phase_params(defaults, load_policy(s)))
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="image.canary", object_type="image",
                 object_id=img.id, tenant_id=tenant_id, before=before,
                 after={"job_id": job.id, "request_id": req.id, "host": host.name, "pool": body.pool},
                 request_id=p.request_id)
    s.commit()
    return CanaryOut(image=image_out(img), request_id=req.id or 0, job_id=job.id or 0, host_id=host.id or 0,
                     host=host.name, release_hint=f"POST /v1/requests/{req.id}/release gives the canary host back")


@router.post("/{image_id}/flag", response_model=ImageOut,
             summary="Flag an image as corrupt: it can't be requested until re-verified")
def flag(image_id: PathId, body: FlagIn, p: Annotated[Principal, Depends(image_writer)],
         s: DbSession) -> ImageOut:
    img = visible_image(s, p, image_id)
    flag_image(s, img.id or 0, body.reason, actor=p.name, actor_id=p.user_id, request_id=p.request_id)
    s.commit()
    return image_out(img)


def _recompute(settings: Settings, img: Image) -> dict[str, Any]:
    path = stored_file(settings, img)
    if path is None:
        raise Problem(409, "image.unavailable", f"image {img.name} has no stored bytes", hint="publish it again")
    if img.stored_compression == "zstd":
        ingest.check_zstd_frames(path)
        return ingest.zst_bmap(path, settings.image_max_bytes)
    return bmap_from_file(path)


@router.post("/{image_id}/verify", response_model=VerifyOut,
             summary="Re-hash the stored bytes against the catalogue; clears the flag when they match")
def verify(image_id: PathId, p: Annotated[Principal, Depends(image_writer)], s: DbSession) -> VerifyOut:
    settings = get_settings()
    img = visible_image(s, p, image_id)
    before = snapshot(img)
    try:
        fresh = _recompute(settings, img)
        ok = fresh["sha256"] == img.sha256 and fresh["ranges"] == img.bmap.get("ranges")
        detail = ("the stored bytes match the catalogue's sha256 and block map" if ok else
                  f"the stored bytes hash to {fresh['sha256']}, the catalogue says {img.sha256}")
    except Invalid as exc:
        if exc.code != "image.corrupt":
            raise
        ok, detail = False, exc.detail
    if ok:
        img.flagged = False
        img.flag_reason = None
    else:
        img.flagged = True
        img.flag_reason = f"re-verification failed: {detail}"
    s.add(img)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="image.verify", object_type="image",
                 object_id=img.id, before=before, after=snapshot(img) | {"ok": ok, "detail": detail},
                 request_id=p.request_id)
    s.commit()
    return VerifyOut(image=image_out(img), ok=ok, detail=detail)


# --------------------------------------------------------------------------------------------------
# serving bytes to hosts (per-job image token)


def _token_image(s: Session, settings: Settings, image_id: int, authorization: str | None,
                 token: str | None) -> Image:
    claims = tokens.verify(settings, tokens.from_request(authorization, token), image_id)
    job = s.get(Job, claims.job_id)
    if job is None or job.status != "running":
        raise Problem(403, "image.token_job_inactive",
                      f"the image token belongs to job {claims.job_id}, which is not running",
                      hint="image tokens only work while their job runs; re-run the job")
    img = s.get(Image, image_id)
    if img is None:
        raise not_found("image", image_id)
    if img.flagged:
        raise Problem(409, "image.flagged", f"image {img.name} is flagged: {img.flag_reason}",
                      hint="the imaging team must re-verify it")
    return img


class ImageFileResponse(FileResponse):
    """Starlette's FileResponse (Range, If-Range, HEAD, multipart byteranges, sendfile), with its
    plain-text 400 and 416 answers replaced by problem documents."""

    def __init__(self, path: Path, *, request: Request, **kw: Any) -> None:
        super().__init__(path, **kw)
        self._request = request
        self._size = path.stat().st_size

    def _problem(self, status: int) -> Response:
        size = self._size
        if status == 416:
            resp = problem_response(Problem(416, "image.range_not_satisfiable",
                                            f"the range {self._request.headers.get('range')!r} is outside the "
                                            f"{size} bytes of the content", size=size,
                                            hint=f"ask for a range within the {size} bytes of the content"),
                                    self._request)
            resp.headers["Content-Range"] = f"bytes */{size}"
            return resp
        return problem_response(Problem(400, "image.range_malformed",
                                        f"the Range header {self._request.headers.get('range')!r} is malformed",
                                        hint="send one byte range, e.g. Range: bytes=0-1048575"), self._request)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        replaced: dict[str, int] = {}

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                replaced["status"] = message["status"]
                return
            if "status" in replaced:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await self._problem(replaced["status"])(scope, receive, send)
                return
            await send(message)

        await super().__call__(scope, receive, _send)


def _serve(image_id: int, request: Request, token: str | None, authorization: str | None,
           s: Session) -> Response:
    settings = get_settings()
    img = _token_image(s, settings, image_id, authorization, token)
    path = stored_file(settings, img)
    if path is None:
        raise Problem(404, "image.content_gone", f"image {img.name} has no stored bytes",
                      hint="the image was retired and purged")
    s.close()
    media = "application/zstd" if img.stored_compression == "zstd" else "application/octet-stream"
    # The ETag names the content, so If-Range resumes only against the same bytes.
    return ImageFileResponse(path, request=request, media_type=media,
                             headers={"ETag": f'"{img.sha256}-{img.stored_compression}"',
                                      "Cache-Control": "no-store"})


# Declared only to refuse it with a clear problem (image.token_in_query) instead of ignoring it.
QueryToken = Annotated[str | None, Query(max_length=2048, deprecated=True,
                                         description="refused (401 image.token_in_query): "
                                         "send the image token as Authorization: Bearer pimg_...")]


class _RouteDoc(TypedDict):
    """Route options shared by GET and HEAD of the content (a TypedDict keeps `**` type-checked)."""

    summary: str
    response_class: type[Response]
    responses: dict[int | str, dict[str, Any]]


CONTENT_DOC: _RouteDoc = {
    "summary": "The stored image bytes (raw or .raw.zst) with HTTP Range; needs the job's image token",
    "response_class": FileResponse,
    "responses": {206: {"description": "partial content (one range, or multipart/byteranges for several)"},
                  416: {"description": "range not satisfiable"}},
}


@router.get("/{image_id}/content", **CONTENT_DOC)
def content(*, image_id: PathId, request: Request, token: QueryToken = None,
            authorization: Annotated[str | None, Header(max_length=4096)] = None, s: DbSession) -> Response:
    return _serve(image_id, request, token, authorization, s)


@router.head("/{image_id}/content", **CONTENT_DOC)
def content_head(*, image_id: PathId, request: Request, token: QueryToken = None,
                 authorization: Annotated[str | None, Header(max_length=4096)] = None, s: DbSession) -> Response:
    return _serve(image_id, request, token, authorization, s)


@router.get("/{image_id}/bmap", summary="The image's block map (JSON); needs the job's image token")
def bmap(*, image_id: PathId, token: QueryToken = None,
         authorization: Annotated[str | None, Header(max_length=4096)] = None,
         s: DbSession) -> dict:
    img = _token_image(s, get_settings(), image_id, authorization, token)
    return dict(img.bmap)
