"""The image catalogue through the API: publish (raw, raw.zst, qcow2, register), integrity data,
refusals that keep nothing, channel rules, canary, flag/verify, and serving bytes with Range and
per-job tokens (also to the real writer module over a real HTTP server).

Images are small synthetic ext4 filesystems (mkfs.ext4 -d on a tiny directory into a sparse file):
no debootstrap needed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
import zstandard

from provisioner.api.error_table import status_for
from provisioner.core.timeutil import utcnow
from provisioner.imaging import tokens
from provisioner.imaging.bmap import bmap_from_file
from provisioner.imaging.catalogue import ImageUnavailable, check_requestable
from provisioner.imaging.formats import raw_to_zst
from provisioner.imaging.serving import image_spec_for
from provisioner.store.config import get_settings
from provisioner.store.db import session_scope
from provisioner.store.image_models import Image
from provisioner.store.models import Host, HostRequest, Job
from tests.integration.harness import REPO, World, bare_metal_host, base_env, running_app

MiB = 1 << 20
WRITER = REPO / "playbooks" / "library" / "provisioner_image_write.py"
META = {"version": "2025.05", "os_name": "debian", "os_version": "12"}


# --------------------------------------------------------------------------------------------------
# helpers


def make_fs_image(where: Path, seed: int = 1, size_mib: int = 32) -> Path:
    """A sparse raw file holding a small ext4 filesystem with some random data in it."""
    root = where / f"rootfs-{seed}"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(f'ID=debian\nVERSION_ID="12"\nBUILD={seed}\n')
    (root / "srv").mkdir()
    (root / "srv" / "blob.bin").write_bytes(random.Random(seed).randbytes(3 * MiB))
    img = where / f"fs-{seed}.raw"
    with open(img, "wb") as f:
        f.truncate(size_mib * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img)], check=True, capture_output=True)
    return img


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def publish(w: World, name: str, content: Any, fmt: str, who: str = "imager", headers: dict | None = None,
            **params: Any) -> Any:
    data = content.read_bytes() if isinstance(content, Path) else content
    q = {k: v for k, v in ({"name": name, "format": fmt} | META | params).items() if v is not None}
    return w.client.post("/v1/images", params=q, content=data, headers=w.h(who) | (headers or {}))


def store() -> Path:
    return get_settings().effective_image_store


def stored_files() -> list[str]:
    root = store()
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_nothing_kept(w: World) -> None:
    assert w.get("admin", "/v1/images").json()["total"] == 0
    assert stored_files() == []


def db_image(image_id: int) -> Image:
    with session_scope() as s:
        img = s.get(Image, image_id)
        assert img is not None
        return img


def running_job(w: World, name: str = "node1") -> int:
    """A job in state running (no worker: its claim is far away), the holder of image tokens."""
    host = w.enroll(name, commission=False)
    with session_scope() as s:
        job = Job(kind="provision", host_id=host["id"], status="running", started_at=utcnow(),
                  claim_until=utcnow() + timedelta(hours=1))
        s.add(job)
        s.commit()
        return job.id or 0


def set_job_status(job_id: int, status: str) -> None:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status = status
        s.add(job)
        s.commit()


def audit_actions(w: World, object_id: int) -> list[str]:
    items = w.get("auditor", "/v1/audit", params={"object_type": "image", "object_id": str(object_id),
                                                  "limit": 100}).json()["items"]
    return [e["action"] for e in sorted(items, key=lambda e: e["id"])]  # oldest first


def pass_canary(image_id: int) -> None:
    with session_scope() as s:
        img = s.get(Image, image_id)
        assert img is not None
        img.canary_result = {"passed": True, "job_id": 0, "reason": "set by the test"}
        s.add(img)
        s.commit()


@pytest.fixture
def fs_image(tmp_path: Path) -> Path:
    return make_fs_image(tmp_path)


# --------------------------------------------------------------------------------------------------
# publishing


def test_publish_raw_zst_qcow2_store_hash_size_and_bmap(world: World, fs_image: Path, tmp_path: Path) -> None:
    want_sha, want_size, want_bmap = sha(fs_image), fs_image.stat().st_size, bmap_from_file(fs_image)
    zst = tmp_path / "fs.raw.zst"
    raw_to_zst(fs_image, zst)
    qcow2 = tmp_path / "fs.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(fs_image), str(qcow2)], check=True)

    cases = [("img-raw", fs_image, "raw", "none", ".raw"), ("img-zst", zst, "raw.zst", "zstd", ".raw.zst"),
             ("img-qcow2", qcow2, "qcow2", "none", ".raw")]
    for name, path, fmt, compression, suffix in cases:
        r = publish(world, name, path, fmt, expected_sha256=want_sha.upper() if fmt == "raw" else None)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["channel"] == "candidate" and body["format_in"] == fmt and body["published_by"] == "imager"
        assert body["sha256"] == want_sha and body["size"] == want_size
        assert body["stored_compression"] == compression and body["stored_path"] == name + suffix
        assert body["ranges"] == len(want_bmap["ranges"]) and body["data_bytes"] < want_size // 2
        img = db_image(body["id"])
        assert img.bmap == want_bmap, f"{fmt}: stored bmap differs from bmap_from_file of the source"
        on_disk = store() / body["stored_path"]
        if compression == "zstd":
            assert on_disk.read_bytes() == zst.read_bytes()  # kept compressed, byte for byte
        else:
            assert sha(on_disk) == want_sha
            assert on_disk.stat().st_blocks * 512 < want_size // 2  # stored sparse
        assert audit_actions(world, body["id"]) == ["image.publish"]
    assert not any(p.startswith(".tmp/") for p in stored_files())  # no temp file left behind
    assert world.get("imager", "/v1/images").json()["total"] == 3
    # Names are never reused.
    r = publish(world, "img-raw", fs_image, "raw")
    assert r.status_code == 409 and r.json()["code"] == "image.exists" and r.json()["hint"]


def test_checksum_mismatch_keeps_nothing(world: World, fs_image: Path) -> None:
    r = publish(world, "bad-sum", fs_image, "raw", expected_sha256="0" * 64)
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["code"] == "image.checksum_mismatch" and body["actual"] == sha(fs_image) and body["hint"]
    assert_nothing_kept(world)


def test_truncated_upload_keeps_nothing(sqlite_world: World, fs_image: Path) -> None:
    w = sqlite_world
    data = fs_image.read_bytes()
    # Content-Length announces more than arrives.
    r = publish(w, "cut", data[: len(data) // 2], "raw", headers={"Content-Length": str(len(data))})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "image.upload_truncated" and r.json()["declared"] == len(data)
    assert_nothing_kept(w)

    # The client goes away mid-body (driven at the ASGI level: a real disconnect message).
    query = urlencode({"name": "gone", "format": "raw"} | META).encode()
    messages = [{"type": "http.request", "body": data[: 5 * MiB], "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/images", "raw_path": b"/v1/images", "query_string": query, "root_path": "",
             "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {w.tokens['imager']}".encode()),
                         (b"content-length", str(len(data)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}

    async def call() -> None:
        await w.client.app(scope, receive, send)  # type: ignore[arg-type]

    anyio.run(call)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body["code"] == "image.upload_truncated"
    assert_nothing_kept(w)


def test_corrupt_zstd_and_format_mismatches(sqlite_world: World, fs_image: Path, tmp_path: Path) -> None:
    w = sqlite_world
    zst = tmp_path / "fs.raw.zst"
    raw_to_zst(fs_image, zst)
    good = zst.read_bytes()
    garbled = bytearray(good)
    garbled[len(good) // 2: len(good) // 2 + 64] = bytes(64)
    for name, blob in (("garbled", bytes(garbled)), ("cut-file", good[: len(good) - 7]),
                       ("half-file", good[: len(good) // 2])):
        r = publish(w, name, blob, "raw.zst")
        assert r.status_code == 422, (name, r.text)
        assert r.json()["code"] == "image.corrupt" and r.json()["hint"], r.json()
    r = publish(w, "not-zstd", fs_image, "raw.zst")
    assert r.status_code == 422 and r.json()["code"] == "image.corrupt" and "magic" in r.json()["detail"]
    r = publish(w, "qcow2-as-raw", b"QFI\xfb" + bytes(8192), "raw")
    assert r.status_code == 422 and r.json()["code"] == "image.format_mismatch" and "qcow2" in r.json()["hint"]
    r = publish(w, "bad-qcow2", b"QFI\xfb" + bytes(8192), "qcow2")
    assert r.status_code == 422 and r.json()["code"] == "image.corrupt"
    r = publish(w, "iso", fs_image, "iso")
    assert r.status_code == 422 and r.json()["code"] == "request.invalid" and "qcow2" in r.json()["detail"]
    r = publish(w, "empty", b"", "raw")
    assert r.status_code == 422 and r.json()["code"] == "image.empty"
    assert_nothing_kept(w)


def test_qcow2_with_backing_file_is_refused(sqlite_world: World, fs_image: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(fs_image), str(overlay)],
                   check=True)
    r = publish(sqlite_world, "overlay", overlay, "qcow2")
    assert r.status_code == 422 and r.json()["code"] == "image.qcow2_backing_file", r.text
    assert_nothing_kept(sqlite_world)


def test_oversize_uploads_are_413_and_keep_nothing(tmp_path: Path) -> None:
    with running_app(base_env(tmp_path, PROVISIONER_IMAGE_MAX_BYTES=str(2 * MiB))) as w:
        big = random.Random(3).randbytes(3 * MiB)
        r = publish(w, "declared", big, "raw")  # Content-Length says too much: refused before reading
        assert r.status_code == 413 and r.json()["code"] == "image.too_large" and r.json()["limit"] == 2 * MiB
        r = w.client.post("/v1/images", params={"name": "chunked", "format": "raw"} | META,
                          content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]), headers=w.h("imager"))
        assert r.status_code == 413 and r.json()["code"] == "image.too_large", r.text
        bomb = zstandard.ZstdCompressor().compress(bytes(64 * MiB))
        assert len(bomb) < 64 * 1024
        r = publish(w, "bomb", bomb, "raw.zst")
        assert r.status_code == 413 and "decompressed" in r.json()["detail"], r.text
        assert_nothing_kept(w)
        # Other endpoints keep the small JSON body limit.
        r = w.client.post("/v1/images/register", content=b"{" + b" " * (2 * MiB) + b"}",
                          headers=w.h("imager") | {"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "request.too_large"


def test_register_a_file_in_the_store(sqlite_world: World, fs_image: Path, tmp_path: Path) -> None:
    w = sqlite_world
    (store() / "builds").mkdir(parents=True)
    shutil.copy(fs_image, store() / "builds" / "fs.raw")
    qcow2 = store() / "builds" / "fs.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(fs_image), str(qcow2)], check=True)
    body = {"name": "reg-raw", "path": "builds/fs.raw"} | META
    r = w.post("imager", "/v1/images/register", body | {"expected_sha256": sha(fs_image)})
    assert r.status_code == 201, r.text
    assert r.json()["stored_path"] == "builds/fs.raw" and r.json()["sha256"] == sha(fs_image)
    assert r.json()["format_in"] == "raw"
    r = w.post("imager", "/v1/images/register", body | {"name": "reg-again"})
    assert r.status_code == 409 and r.json()["code"] == "image.file_in_use"
    r = w.post("imager", "/v1/images/register", {"name": "reg-qcow2", "path": "builds/fs.qcow2"} | META)
    assert r.status_code == 201 and r.json()["stored_path"] == "reg-qcow2.raw", r.text
    assert r.json()["sha256"] == sha(fs_image)
    outside = tmp_path / "outside.raw"
    shutil.copy(fs_image, outside)
    (store() / "link.raw").symlink_to(outside)
    for path, code in (("../outside.raw", "image.path_outside_store"), (str(outside), "image.path_invalid"),
                       ("link.raw", "image.path_outside_store"), ("builds/nope.raw", "image.file_not_found"),
                       (".tmp/x.part", "image.path_invalid")):
        if path.startswith(".tmp"):
            (store() / ".tmp").mkdir(exist_ok=True)
            (store() / path).write_bytes(b"x")
        r = w.post("imager", "/v1/images/register", {"name": "reg-bad", "path": path} | META)
        assert r.status_code in (404, 422) and r.json()["code"] == code, (path, r.text)
    assert r.json()["hint"]
    assert audit_actions(w, 1) == ["image.register"]


# --------------------------------------------------------------------------------------------------
# who sees and does what; channels


def test_rbac_and_visibility(world: World, fs_image: Path) -> None:
    r = publish(world, "cust-try", fs_image, "raw", who="cust_a")
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    r = publish(world, "op-try", fs_image, "raw", who="operator")
    assert r.status_code == 403
    assert world.client.post("/v1/images", params={"name": "anon", "format": "raw"} | META,
                             content=b"x").status_code == 401
    img = publish(world, "vis", fs_image, "raw", who="admin").json()
    assert world.get("cust_a", "/v1/images").json()["total"] == 0  # candidates are invisible to customers
    assert world.get("cust_a", f"/v1/images/{img['id']}").status_code == 404
    for who in ("imager", "operator", "auditor", "admin"):
        assert world.get(who, f"/v1/images/{img['id']}").status_code == 200
    assert world.post("cust_a", f"/v1/images/{img['id']}/promote", {"to": "stable"}).status_code == 403
    assert world.post("operator", f"/v1/images/{img['id']}/canary").status_code == 403
    pass_canary(img["id"])
    assert world.post("imager", f"/v1/images/{img['id']}/promote", {"to": "stable"}).status_code == 200
    listed = world.get("cust_a", "/v1/images").json()
    assert [i["name"] for i in listed["items"]] == ["vis"]
    r = world.get("imager", "/v1/images", params={"channel": "gold"})
    assert r.status_code == 422 and r.json()["code"] == "request.invalid" and "stable" in r.json()["detail"]


def test_channel_rules_and_retirement(world: World, fs_image: Path) -> None:
    img = publish(world, "chan", fs_image, "raw").json()
    iid = img["id"]
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "stable"})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "image.canary_required"
    assert r.json()["hint"] == f"run a canary: POST /v1/images/{iid}/canary"
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "retired"})
    assert r.status_code == 409 and r.json()["code"] == "image.illegal_promotion" and "stable" in r.json()["hint"]
    with session_scope() as s:
        assert check_requestable(s, "chan", "customer").code == "image.channel_not_allowed"  # type: ignore[union-attr]
        assert check_requestable(s, "chan", "imager") is None
        assert check_requestable(s, "debian-12", "customer").code == "image.unknown"  # type: ignore[union-attr]
    pass_canary(iid)
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "stable", "reason": "canary ok"})
    assert r.status_code == 200 and r.json()["channel"] == "stable" and r.json()["promoted_at"], r.text
    with session_scope() as s:
        assert check_requestable(s, "chan", "customer") is None
    assert world.post("imager", f"/v1/images/{iid}/promote", {"to": "deprecated"}).json()["channel"] == "deprecated"
    with session_scope() as s:
        p = check_requestable(s, "chan", "customer")
        assert p is not None and status_for(p) == 422 and p.code == "image.deprecated" and p.hint
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "stable"})
    assert r.status_code == 409 and r.json()["code"] == "image.illegal_promotion"

    # An active host requested with the image keeps its bytes when the image is retired.
    host = world.enroll("user1", commission=False)
    with session_scope() as s:
        req = HostRequest(tenant_id=world.ids["acme"], requested_by=world.ids["cust_a"], image="chan", count=1)
        s.add(req)
        s.flush()
        h = s.get(Host, host["id"])
        assert h is not None
        h.state, h.request_id, h.tenant_id = "active", req.id, world.ids["acme"]
        s.add(h)
        s.commit()
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "retired"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["channel"] == "retired" and body["purge"]["bytes_removed"] is False
    assert body["purge"]["kept_for_hosts"] == [{"id": host["id"], "name": "user1", "state": "active"}]
    assert (store() / "chan.raw").exists()
    r = world.post("imager", f"/v1/images/{iid}/purge")
    assert r.status_code == 409 and r.json()["code"] == "image.in_use"
    with session_scope() as s:
        assert check_requestable(s, "chan", "customer").code == "image.retired"  # type: ignore[union-attr]
    # Released: the bytes go.
    with session_scope() as s:
        h = s.get(Host, host["id"])
        assert h is not None
        h.state = "available"
        s.add(h)
        s.commit()
    r = world.post("imager", f"/v1/images/{iid}/purge")
    assert r.status_code == 200 and r.json()["purge"]["bytes_removed"] is True and r.json()["stored_path"] is None
    assert not (store() / "chan.raw").exists()
    assert audit_actions(world, iid) == ["image.publish", "image.promote", "image.promote", "image.promote",
                                         "image.purge"]
    audit = world.get("auditor", "/v1/audit", params={"action": "image.promote"}).json()["items"]
    retire = next(e for e in audit if e["after"]["channel"] == "retired")
    assert retire["before"]["channel"] == "deprecated" and retire["actor_name"] == "imager"
    assert retire["after"]["purge"]["bytes_removed"] is False


def test_flag_blocks_requests_until_reverified(sqlite_world: World, fs_image: Path) -> None:
    w = sqlite_world
    img = publish(w, "flg", fs_image, "raw").json()
    iid = img["id"]
    r = w.post("imager", f"/v1/images/{iid}/flag", {"reason": "writer said range 3 mismatched"})
    assert r.status_code == 200 and r.json()["flagged"] is True
    with session_scope() as s:
        p = check_requestable(s, "flg", "imager")
        assert p is not None and p.code == "image.flagged" and status_for(p) == 422
    assert w.post("imager", f"/v1/images/{iid}/canary").json()["code"] == "image.flagged"
    pass_canary(iid)
    assert w.post("imager", f"/v1/images/{iid}/promote", {"to": "stable"}).json()["code"] == "image.flagged"
    r = w.post("imager", f"/v1/images/{iid}/verify")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["image"]["flagged"] is False
    with session_scope() as s:
        assert check_requestable(s, "flg", "imager") is None
    # Damage the stored bytes: re-verification fails and flags it.
    path = store() / "flg.raw"
    bm = db_image(iid).bmap
    with open(path, "r+b") as f:
        f.seek(bm["ranges"][-1]["start"])
        f.write(b"\xff" * 16)
    r = w.post("imager", f"/v1/images/{iid}/verify")
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["image"]["flagged"] is True
    assert "re-verification failed" in r.json()["image"]["flag_reason"]
    assert audit_actions(w, iid) == ["image.publish", "image.flag", "image.verify", "image.verify"]


def test_failed_job_with_image_corrupt_flags_the_image(sqlite_world: World, fs_image: Path) -> None:
    from provisioner.services.settle import settle

    w = sqlite_world
    iid = publish(w, "corr", fs_image, "raw").json()["id"]
    job_id = running_job(w)
    with session_scope() as s:
        req = HostRequest(tenant_id=w.ids["acme"], requested_by=w.ids["imager"], image="corr", count=1)
        s.add(req)
        s.flush()
        job = s.get(Job, job_id)
        assert job is not None
        job.request_id = req.id
        s.add(job)
        s.commit()
        error = "phase image failed: image write failed: image corrupt: range [0, 4096) sha256 mismatch"
        # The writer's code, not the wording, is what flags the image: a message alone does nothing.
        other = running_job(w, "node2")
        other_job = s.get(Job, other)
        assert other_job is not None
        other_job.request_id = req.id
        assert settle(s, other_job, "failed", error, error_code="phase_failed")
        assert not db_image(iid).flagged
        assert settle(s, job, "failed", error, error_code="image_corrupt")
    img = db_image(iid)
    assert img.flagged and "image corrupt" in (img.flag_reason or "")
    assert w.get("operator", f"/v1/jobs/{job_id}").json()["error_code"] == "image_corrupt"


# --------------------------------------------------------------------------------------------------
# serving bytes


def test_content_range_and_token_scoping(sqlite_world: World, fs_image: Path) -> None:
    w = sqlite_world
    data = fs_image.read_bytes()
    size = len(data)
    img = publish(w, "served", fs_image, "raw").json()
    other = publish(w, "other", make_fs_image(fs_image.parent, seed=2), "raw").json()
    job_id = running_job(w)
    settings = get_settings()
    tok = tokens.issue(settings, job_id=job_id, image_id=img["id"])
    url = f"/v1/images/{img['id']}/content"
    auth = {"Authorization": f"Bearer {tok}"}

    r = w.client.get(url, headers=auth)
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes" and int(r.headers["content-length"]) == size
    r = w.client.get(url, headers=auth | {"Range": "bytes=1024-2047"})
    assert r.status_code == 206 and r.content == data[1024:2048]
    assert r.headers["content-range"] == f"bytes 1024-2047/{size}"
    r = w.client.get(url, headers=auth | {"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == data[-100:] and r.headers["content-range"] == \
        f"bytes {size - 100}-{size - 1}/{size}"
    r = w.client.get(url, headers=auth | {"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = w.client.get(url, headers=auth | {"Range": f"bytes=0-{size * 2}"})  # clipped to the content
    assert r.status_code == 206 and len(r.content) == size
    for bad in (f"bytes={size}-", "bytes=-0"):
        r = w.client.get(url, headers=auth | {"Range": bad})
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{size}" and r.json()["code"] == "image.range_not_satisfiable"
        assert r.headers["content-type"] == "application/problem+json"
    for bad in ("bytes=500-100", "bytes=abc", "bytes="):
        r = w.client.get(url, headers=auth | {"Range": bad})
        assert r.status_code == 400 and r.json()["code"] == "image.range_malformed", (bad, r.text)
    r = w.client.get(url, headers=auth | {"Range": "bytes=0-1,5-9"})  # several ranges: multipart/byteranges
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:2] in r.content and data[5:10] in r.content
    # If-Range with the current ETag resumes; with another one the whole (changed) content comes back.
    etag = w.client.head(url, headers=auth).headers["etag"]
    assert etag == f'"{img["sha256"]}-none"'  # names the content, not the file's mtime
    r = w.client.get(url, headers=auth | {"Range": "bytes=10-19", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[10:20]
    r = w.client.get(url, headers=auth | {"Range": "bytes=10-19", "If-Range": '"something-else"'})
    assert r.status_code == 200 and len(r.content) == size
    r = w.client.head(url, headers=auth | {"Range": "bytes=0-0"})
    assert r.status_code == 206 and r.headers["content-length"] == "1" and r.content == b""

    r = w.client.get(f"/v1/images/{img['id']}/bmap", headers=auth)
    assert r.status_code == 200 and r.json() == bmap_from_file(fs_image)

    # Scoping: missing, forged, expired, for another image, an API token, a job that ended.
    r = w.client.get(url)
    assert r.status_code == 401 and r.json()["code"] == "image.token_required" and r.json()["hint"]
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    r = w.client.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["code"] == "image.token_invalid"
    expired = tokens.issue(settings, job_id=job_id, image_id=img["id"], ttl_s=-1)
    r = w.client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["code"] == "image.token_expired"
    # The query-string form is refused, even with a valid token and even beside a valid header: a URL
    # carrying a token ends up in logs.
    for path in (url, f"/v1/images/{img['id']}/bmap"):
        for headers in ({}, auth):
            r = w.client.get(path, params={"token": tok}, headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "image.token_in_query", (path, r.text)
            assert "Authorization" in r.json()["hint"]
            assert r.headers["content-type"] == "application/problem+json"
    assert w.client.head(url, params={"token": tok}).status_code == 401
    r = w.client.get(f"/v1/images/{other['id']}/content", headers=auth)
    assert r.status_code == 403 and r.json()["code"] == "image.token_wrong_image"
    assert w.client.get(f"/v1/images/{other['id']}/bmap", headers=auth).status_code == 403
    assert w.client.get(url, headers=w.h("admin")).status_code == 401
    set_job_status(job_id, "succeeded")
    r = w.client.get(url, headers=auth)
    assert r.status_code == 403 and r.json()["code"] == "image.token_job_inactive"


def test_image_spec_for(sqlite_world: World, fs_image: Path, tmp_path: Path) -> None:
    w = sqlite_world
    zst = tmp_path / "s.raw.zst"
    raw_to_zst(fs_image, zst)
    iid = publish(w, "spec", zst, "raw.zst").json()["id"]
    job_id = running_job(w)
    settings = get_settings().model_copy(update={"public_url": "http://192.0.2.1:8080/"})
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert image_spec_for(s, settings, job, "debian-12", "/dev/md0") is None
        assert image_spec_for(s, settings, job, None, "/dev/md0") is None
        spec = image_spec_for(s, settings, job, "spec", "/dev/md0")
        assert spec is not None
        assert spec["url"] == f"http://192.0.2.1:8080/v1/images/{iid}/content"
        assert spec["compression"] == "zstd" and spec["target"] == "/dev/md0"
        assert spec["sha256"] == sha(fs_image) and spec["bmap"] == bmap_from_file(fs_image)
        assert tokens.verify(settings, spec["token"], iid).job_id == job_id
        with pytest.raises(ImageUnavailable, match="no target"):
            image_spec_for(s, settings, job, "spec", None)
    w.post("imager", f"/v1/images/{iid}/flag", {"reason": "test"})
    with session_scope() as s, pytest.raises(ImageUnavailable, match="flagged"):
        image_spec_for(s, settings, s.get(Job, job_id), "spec", "/dev/md0")  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(sqlite_world: World) -> Iterator[str]:
    """The same service (same database and store) on a real port, for the writer module."""
    import uvicorn

    from provisioner.cli.service import build_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(get_settings(), embedded_worker=False), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def run_writer(tmp_path: Path, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, str(WRITER), str(args_file)], capture_output=True, text=True,
                          timeout=180, check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", ["raw", "raw.zst"])
def test_writer_module_installs_from_the_service(sqlite_world: World, live_server: str, fs_image: Path,
                                                 tmp_path: Path, fmt: str) -> None:
    """The real writer, given exactly what image_spec_for produces, against the real content endpoint."""
    src = fs_image
    if fmt == "raw.zst":
        src = tmp_path / "w.raw.zst"
        raw_to_zst(fs_image, src)
    assert publish(sqlite_world, "w", src, fmt).status_code == 201
    job_id = running_job(sqlite_world)
    target = tmp_path / "disk.img"
    target.write_bytes(random.Random(9).randbytes(fs_image.stat().st_size))  # junk the writer must overwrite
    settings = get_settings().model_copy(update={"public_url": live_server})
    with session_scope() as s:
        spec = image_spec_for(s, settings, s.get(Job, job_id), "w", str(target))  # type: ignore[arg-type]
    assert spec is not None
    args = {k: spec[k] for k in ("url", "token", "sha256", "bmap", "compression", "target")}
    rc, res = run_writer(tmp_path, args | {"timeout": 10, "retry_timeout": 20})
    assert rc == 0, res
    assert res["mode"] == ("ranges" if fmt == "raw" else "zstd-stream")
    assert sha(target) == sha(fs_image)
    if fmt == "raw":  # only the data ranges travelled
        assert res["bytes_downloaded"] < fs_image.stat().st_size // 2
    # The same token once the job ended: the writer reports an auth failure.
    set_job_status(job_id, "failed")
    rc, res = run_writer(tmp_path, args)
    assert rc != 0 and res["error"] == "auth_failed"


# --------------------------------------------------------------------------------------------------
# canary through the normal pipeline


def test_canary_needs_a_bmc_host_and_its_outcome_gates_promotion(world: World, fs_image: Path) -> None:
    iid = publish(world, "can", fs_image, "raw").json()["id"]
    r = world.post("imager", f"/v1/images/{iid}/canary", {"pool": "default"})
    assert r.status_code == 422 and r.json()["code"] == "image.canary_pool_not_lab"
    r = world.post("admin", f"/v1/images/{iid}/canary")
    assert r.status_code == 422 and r.json()["code"] == "image.canary_tenant" and "tenant_id" in r.json()["hint"]
    # A lab host reached over SSH keeps its own OS: a canary there would prove nothing about booting.
    world.enroll("lab1", pool="lab")
    r = world.post("imager", f"/v1/images/{iid}/canary")
    assert r.status_code == 409 and r.json()["code"] == "image.needs_bmc" and r.json()["ssh_hosts"] == 1, r.text
    assert audit_actions(world, iid) == ["image.publish"]
    assert db_image(iid).canary_job_id is None
    host_id = bare_metal_host("bm1", pool="lab")
    r = world.post("imager", f"/v1/images/{iid}/canary")
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["host_id"] == host_id and out["image"]["canary_job_id"] == out["job_id"]
    assert "release" in out["release_hint"]
    req = world.get("imager", f"/v1/requests/{out['request_id']}").json()
    assert req["image"] == "can" and req["pool"] == "lab" and req["params"]["customer_user"] == "canary"
    r = world.post("imager", f"/v1/images/{iid}/canary")
    assert r.status_code == 409 and r.json()["code"] in ("image.canary_running", "capacity.insufficient")
    job = world.wait_job(out["job_id"], who="imager")
    # (this world has no deploy ramdisk configured, and nothing answers at the BMC's address)
    assert job["status"] == "failed" and job["error_code"] in ("deploy.no_ramdisk", "bmc.unreachable"), job
    assert job["phases"][0]["name"] == "ramdisk-boot", job["phases"]
    # Settling the job records the canary's outcome on the image, in the same transaction.
    img = world.get("imager", f"/v1/images/{iid}").json()
    result = img["canary_result"]
    assert result is not None, "the canary job settled but its outcome was not recorded on the image"
    assert result["passed"] is False and result["job_id"] == out["job_id"] and result["host"] == "bm1", result
    assert result["reason"] == f"job failed: {job['error']}", result
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "stable"})
    assert r.status_code == 409 and r.json()["code"] == "image.canary_required"
    assert "failed" in r.json()["detail"] and r.json()["hint"] == f"run a canary: POST /v1/images/{iid}/canary"
    assert audit_actions(world, iid) == ["image.publish", "image.canary", "image.canary_result"]
    # A canary that passed (on the lab: test_bare_metal_deploy) lets it through.
    pass_canary(iid)
    r = world.post("imager", f"/v1/images/{iid}/promote", {"to": "stable"})
    assert r.status_code == 200 and r.json()["channel"] == "stable", r.text
