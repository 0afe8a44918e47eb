"""Pure parts of the image catalogue: Range parsing, image tokens, zstd frame walking, channel moves,
canary verdicts, the image phase's target."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
import zstandard
from cryptography.fernet import Fernet

from provisioner.api.error_table import status_for
from provisioner.core.errors import DomainError
from provisioner.imaging import tokens
from provisioner.imaging.canary import outcome
from provisioner.imaging.catalogue import check_promotion
from provisioner.imaging.ingest import check_zstd_frames
from provisioner.imaging.serving import image_target_for
from provisioner.store.config import Settings
from provisioner.store.image_models import Image
from provisioner.store.keyset import key_set
from provisioner.store.models import Host


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key=Fernet.generate_key().decode())


def test_token_round_trip_and_scoping(settings: Settings) -> None:
    tok = tokens.issue(settings, job_id=7, image_id=3, now=1000.0, ttl_s=60)
    claims = tokens.verify(settings, tok, 3, now=1030.0)
    assert (claims.job_id, claims.image_id) == (7, 3)
    cases = [
        (lambda: tokens.verify(settings, tok, 4, now=1030.0), 403, "image.token_wrong_image"),
        (lambda: tokens.verify(settings, tok, 3, now=1061.0), 401, "image.token_expired"),
        (lambda: tokens.verify(settings, None, 3), 401, "image.token_required"),
        (lambda: tokens.verify(settings, "prov_abc_def", 3), 401, "image.token_invalid"),
        (lambda: tokens.verify(settings, tok.replace(".", ".x"), 3, now=1030.0), 401, "image.token_invalid"),
        # Signed with the right key for another audience (an API-token look-alike): refused.
        (lambda: tokens.verify(settings, tokens.PREFIX + jwt.encode(
            {"job": 7, "img": 3, "exp": 2000, "aud": "elsewhere"}, tokens._derive(key_set(settings).newest.material),
            algorithm="HS256", headers={"kid": key_set(settings).newest.kid}),
            3, now=1030.0), 401, "image.token_invalid"),
        # The right key and kid but no signature check possible without the algorithm we sign with.
        (lambda: tokens.verify(settings, tokens.PREFIX + jwt.encode(
            {"job": 7, "img": 3, "exp": 2000, "aud": tokens.AUDIENCE}, None, algorithm="none",
            headers={"kid": key_set(settings).newest.kid}), 3, now=1030.0), 401, "image.token_invalid"),
    ]
    for call, status, code in cases:
        with pytest.raises(DomainError) as exc:
            call()
        assert (status_for(exc.value), exc.value.code) == (status, code) and exc.value.hint
    # Claims for another image with this token's signature: changing the image id breaks the mac.
    other = tokens.issue(settings, job_id=7, image_id=4, now=1000.0, ttl_s=60)
    spliced = ".".join(other.split(".")[:2] + tok.split(".")[2:])
    with pytest.raises(DomainError, match="signature"):
        tokens.verify(settings, spliced, 4, now=1030.0)


def test_token_needs_the_same_secret(settings: Settings, tmp_path: Path) -> None:
    tok = tokens.issue(settings, job_id=1, image_id=1)
    other = Settings(data_dir=tmp_path / "other", secret_key=Fernet.generate_key().decode())
    with pytest.raises(DomainError, match="signed with a key this service does not have") as exc:
        tokens.verify(other, tok, 1)
    assert exc.value.code == "image.token_invalid" and "PROVISIONER_SECRET_KEY" in (exc.value.hint or "")
    # Without a configured secret the key file in the data dir is used (created once, shared).
    keyfile = Settings(data_dir=tmp_path / "kf")
    assert tokens.verify(keyfile, tokens.issue(keyfile, job_id=2, image_id=5), 5).job_id == 2
    assert tokens.from_request("Bearer abc", None) == "abc"
    assert tokens.from_request("Basic abc", None) is None
    assert tokens.from_request(None, None) is None
    for query in ("q", ""):  # the query-string form is refused, not ignored
        with pytest.raises(DomainError) as qexc:
            tokens.from_request("Bearer abc", query)
        assert qexc.value.code == "image.token_in_query" and status_for(qexc.value) == 401


def test_zstd_frame_walk_catches_truncation(tmp_path: Path) -> None:
    data = bytes(3 << 20) + b"payload" * 50000 + bytes(1 << 20)
    one = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    two = one + zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(b"x" * 300000)
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    path = tmp_path / "f.zst"
    for blob, frames in ((one, 1), (two, 2), (skippable + one, 1)):
        path.write_bytes(blob)
        assert check_zstd_frames(path) == frames
    for blob in (one[:-1], one[:-4], one[: len(one) // 2], two[:-5], one[:3], skippable[:9], b"\x00" * 16, b""):
        path.write_bytes(blob)
        with pytest.raises(DomainError) as exc:
            check_zstd_frames(path)
        assert exc.value.code == "image.corrupt"


def _img(channel: str, **kw: object) -> Image:
    return Image(id=1, name="x", version="1", os_name="d", os_version="12", format_in="raw", channel=channel,
                 size=1, sha256="0" * 64, published_by="t", **kw)


def test_channel_moves() -> None:
    check_promotion(_img("candidate", canary_result={"passed": True}), "stable")
    check_promotion(_img("stable"), "deprecated")
    check_promotion(_img("deprecated"), "retired")
    bad = [(_img("candidate"), "stable", "image.canary_required"),
           (_img("candidate", canary_job_id=4, canary_result={"passed": False, "job_id": 4, "reason": "boom"}),
            "stable", "image.canary_required"),
           (_img("candidate", canary_result={"passed": True}, flagged=True), "stable", "image.flagged"),
           (_img("candidate"), "deprecated", "image.illegal_promotion"),
           (_img("stable"), "retired", "image.illegal_promotion"),
           (_img("deprecated"), "stable", "image.illegal_promotion"),
           (_img("retired"), "stable", "image.illegal_promotion")]
    for img, target, code in bad:
        with pytest.raises(DomainError) as exc:
            check_promotion(img, target)
        assert status_for(exc.value) == 409 and exc.value.code == code and exc.value.hint


def test_canary_verdict() -> None:
    ok_phases = [{"name": "raid", "status": "succeeded"}, {"name": "image", "status": "succeeded"}]
    # A canary passes only when the host booted the disk and named this image's version.
    wrote = {"mode": "ranges", "bytes_written": 10}
    booted = {"identity": {"name": "debian-12-boot", "version": "2026.12", "build_id": "k"}}
    assert outcome("succeeded", None, ok_phases, wrote, booted=booted, image_version="2026.12")[0] is True
    assert outcome("succeeded", None, ok_phases, wrote, booted=None, image_version="2026.12") == (
        False, "the host did not report the image-identity file after booting the written disk")
    assert outcome("succeeded", None, ok_phases, wrote, booted={"identity": None}, image_version="2026.12")[0] is False
    assert "version '2026.12'" in outcome("succeeded", None, ok_phases, wrote, booted=booted,
                                          image_version="2026.13")[1]
    assert outcome("failed", "phase image failed: x", ok_phases, None) == (False, "job failed: phase image failed: x")
    assert outcome("succeeded", None, ok_phases, {"skipped": True})[0] is False
    assert outcome("succeeded", None, ok_phases, None)[0] is False
    assert outcome("succeeded", None, [{"name": "raid", "status": "succeeded"}], {"mode": "ranges"})[0] is False


def test_image_target_is_the_root_disk_of_a_bare_metal_host_only() -> None:
    bm = {"root_disk": {"name": "sda", "path": "/dev/sda"}, "data_disks": ["/dev/sdb"]}
    assert image_target_for(Host(name="a", address="x", driver="redfish", hardware=bm)) == "/dev/sda"
    assert image_target_for(Host(name="a", address="x", driver="redfish", hardware={"root_disk": "vda"})) == "/dev/vda"
    assert image_target_for(Host(name="a", address="x", driver="redfish")) is None  # not inspected yet
    # A host reached over SSH: its array and disks are never an image target.
    assert image_target_for(Host(name="a", address="x", results={"raid": {"device": "/dev/md0"}},
                                 hardware={"data_disks": ["/dev/vdb"]})) is None
