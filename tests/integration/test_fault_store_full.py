"""Fault: the image store's filesystem fills up during a publish.

The store is a real, small filesystem (a size-limited tmpfs mounted for the test; needs root):
the upload's writes hit ENOSPC for real. The answer must be a problem document that says so (not a
500, not "corrupt"), and nothing may be half kept: no catalogue row, no file in the store, not even
under .tmp, and the space comes back (a smaller image then publishes into the same store).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import World, base_env, running_app

MiB = 1 << 20
META = {"version": "1", "os_name": "debian", "os_version": "12"}
STORE_MIB = 4


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the image store needs root")
    where = tmp_path / "store"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORE_MIB}m,mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=False, capture_output=True, timeout=30)


@pytest.fixture
def store_world(tmp_path: Path, small_store: Path) -> Iterator[World]:
    with running_app(base_env(tmp_path, PROVISIONER_IMAGE_STORE=str(small_store))) as w:
        yield w


def files_in(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def used_bytes(store: Path) -> int:
    st = os.statvfs(store)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def publish(w: World, name: str, data: bytes, fmt: str) -> httpx.Response:
    return w.client.post("/v1/images", params={"name": name, "format": fmt} | META, content=data,
                         headers=w.h("imager"))


def assert_store_full_problem(r: httpx.Response, store: Path, w: World) -> None:
    assert r.status_code == 507, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "image.store_full" and "free space" in body["hint"], body
    assert w.get("admin", "/v1/images").json()["total"] == 0
    assert files_in(store) == []
    assert used_bytes(store) < MiB // 2, "the failed upload's blocks were not given back"


def test_store_full_during_upload_keeps_nothing(store_world: World, small_store: Path) -> None:
    w = store_world
    # Random bytes: a raw upload is written sparse, zeros would never reach the disk.
    too_big = random.Random(1).randbytes((STORE_MIB + 2) * MiB)
    for fmt in ("raw", "raw.zst"):
        data = too_big if fmt == "raw" else b"\x28\xb5\x2f\xfd" + too_big
        r = publish(w, f"big-{fmt.replace('.', '-')}", data, fmt)
        assert_store_full_problem(r, small_store, w)
    # The space really came back: an image that fits is published into the same store.
    fits = random.Random(2).randbytes(MiB)
    r = publish(w, "fits", fits, "raw")
    assert r.status_code == 201, r.text
    assert files_in(small_store) == ["fits.raw"]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) not installed")
def test_store_full_while_converting_qcow2_keeps_nothing(store_world: World, small_store: Path,
                                                          tmp_path: Path) -> None:
    """The qcow2 upload itself fits; its conversion to raw (a second copy in .tmp) does not."""
    raw = tmp_path / "src.raw"
    raw.write_bytes(random.Random(3).randbytes(int(STORE_MIB * 0.6 * MiB)))
    qcow2 = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    assert qcow2.stat().st_size < STORE_MIB * MiB
    r = publish(store_world, "conv", qcow2.read_bytes(), "qcow2")
    assert_store_full_problem(r, small_store, store_world)
