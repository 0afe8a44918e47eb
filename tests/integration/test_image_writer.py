"""The image writer module run for real, as Ansible runs it, against a real HTTP server on 127.0.0.1.

The server (stdlib ThreadingHTTPServer, Range + bearer token, fault injection) serves images made
here; the target is a regular file full of random junk, so any byte the writer forgets shows up.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import mmap
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard

from provisioner.imaging.bmap import bmap_from_file
from provisioner.imaging.formats import raw_to_zst, zst_to_raw_with_bmap

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "playbooks" / "library" / "provisioner_image_write.py"
TOKEN = "s3cret-token"
MiB = 1 << 20


# --------------------------------------------------------------------------------------------------
# server


@dataclass
class Faults:
    """What the server does wrong. Byte counts are body bytes over all requests."""

    drop_after: int | None = None  # cut the connection once this many body bytes were sent
    outage: bool = False  # after the cut, drop every further request too
    ignore_range: bool = False  # answer 200 with the whole file, like a server without Range support
    served: int = 0
    drops: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, Path] = {}
        self.faults = Faults()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body (probe, abort) are part of these tests


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    disable_nagle_algorithm = True  # headers then body: Nagle + delayed ACK would stall each request
    server: ImageServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        faults = self.server.faults
        with faults.lock:
            faults.requests += 1
            in_outage = faults.outage and faults.drops > 0
        if in_outage:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._empty(401, {"WWW-Authenticate": "Bearer"})
            return
        path = self.server.files.get(self.path)
        if path is None:
            self._empty(404)
            return
        size = path.stat().st_size
        start, end = 0, size
        status = 200
        rng = None if faults.ignore_range else self.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(size, int(last) + 1) if last else size
            if start >= size or start >= end:
                self._empty(416, {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            # the writer's one-byte probe does not count: without Range support its response is the
            # whole file, abandoned after the headers, and how much of it got sent is up to the kernel
            counted = self.headers.get("Range") != "bytes=0-0"
            while pos < end:
                n = min(256 * 1024, end - pos)
                with faults.lock:
                    budget = None
                    if counted and faults.drop_after is not None and (faults.drops == 0 or faults.outage):
                        budget = faults.drop_after - faults.served
                    if budget is not None and budget < n:
                        n = max(0, budget)
                        faults.drops += 1
                        faults.drop_after = None if not faults.outage else faults.drop_after
                        cut = True
                    else:
                        cut = False
                    faults.served += n if counted else 0
                self.wfile.write(f.read(n))
                pos += n
                if cut:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    srv = ImageServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _reset_faults(server: ImageServer) -> None:
    server.faults = Faults()


# --------------------------------------------------------------------------------------------------
# images


@dataclass
class Image:
    name: str
    raw: Path
    bmap: dict[str, Any]
    content: bytes  # the full raw content, holes as zeros


def _make_sparse(path: Path, rnd: random.Random) -> None:
    size = 40 * MiB + 4096
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in [
            (0, 512),  # an "MBR"
            (MiB - 8192, 16384),  # straddles the first-MiB boundary
            (3 * MiB, 2 * MiB),
            (9 * MiB + 4096, 300 * 1024),
            (9 * MiB + 900 * 1024, 64 * 1024),  # within merge_gap of the previous run
            (17 * MiB - 100, 200),  # crosses a 16 MiB range boundary
            (33 * MiB, 5 * MiB),
            (size - 4096, 4096),  # last block
        ]:
            f.seek(off)
            f.write(rnd.randbytes(length))
        f.seek(20 * MiB)  # allocated but all zeros: the bmap must call it a hole
        f.write(bytes(2 * MiB))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, server: ImageServer) -> dict[str, Image]:
    d = tmp_path_factory.mktemp("images")
    rnd = random.Random(1234)
    out: dict[str, Image] = {}

    sparse = d / "sparse.raw"
    _make_sparse(sparse, rnd)
    dense = d / "dense.raw"
    dense.write_bytes(rnd.randbytes(12 * MiB + 1000))  # size off the block grid on purpose
    zst = d / "sparse.raw.zst"
    raw_to_zst(sparse, zst)

    for name, raw in [("sparse", sparse), ("dense", dense)]:
        out[name] = Image(name, raw, bmap_from_file(raw), raw.read_bytes())
    out["zstd"] = Image("zstd", zst, out["sparse"].bmap, out["sparse"].content)

    # corrupt copies: one flipped bit inside a data range past the first MiB
    flipped = d / "sparse-flipped.raw"
    data = bytearray(out["sparse"].content)
    data[34 * MiB + 12345] ^= 0x10
    flipped.write_bytes(bytes(data))
    bad_zst = d / "sparse-bad.raw.zst"
    zdata = bytearray(zst.read_bytes())
    zdata[len(zdata) // 2 : len(zdata) // 2 + 64] = rnd.randbytes(64)
    bad_zst.write_bytes(bytes(zdata))

    server.files.update(
        {
            "/img/sparse.raw": sparse,
            "/img/dense.raw": dense,
            "/img/sparse.raw.zst": zst,
            "/img/sparse-flipped.raw": flipped,
            "/img/sparse-bad.raw.zst": bad_zst,
        }
    )
    bmap_file = d / "sparse.bmap.json"
    bmap_file.write_text(json.dumps(out["sparse"].bmap))
    server.files["/bmap/sparse"] = bmap_file
    return out


# --------------------------------------------------------------------------------------------------
# running the module


def run_module(tmp_path: Path, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the module as Ansible's AnsiballZ wrapper does: python3 module.py <args file>."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, timeout=180, check=False
    )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"module printed no JSON (rc={proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc.returncode, result


def junk_target(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    target = tmp_path / "disk.img"
    junk = random.Random(size).randbytes(size)
    target.write_bytes(junk)
    return target, junk


def base_args(server: ImageServer, image: Image, target: Path, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "url": f"{server.base}/img/{image.raw.name}",
        "token": TOKEN,
        "bmap": image.bmap,
        "sha256": image.bmap["sha256"],
        "target": str(target),
        "compression": "zstd" if image.raw.suffix == ".zst" else "none",
        "retry_timeout": 10,
        "timeout": 5,
    }
    args.update(extra)
    return args


# --------------------------------------------------------------------------------------------------
# happy paths


@pytest.mark.parametrize(
    ("name", "extra", "mode"),
    [
        ("sparse", {}, "ranges"),
        ("dense", {}, "ranges"),
        ("zstd", {}, "zstd-stream"),
        ("sparse", {"direct_io": "no", "download_workers": 1, "write_workers": 1}, "ranges"),
        ("dense", {"verify": False, "range_chunk_size": MiB, "queue_depth": 2}, "ranges"),
        ("sparse", {"range_chunk_size": MiB}, "ranges"),  # ranges in several chunks, each read back
        ("zstd", {"chunk_size": MiB, "queue_depth": 2}, "zstd-stream"),
    ],
)
def test_writes_image_exactly(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], name: str, extra: dict[str, Any], mode: str
) -> None:
    image = images[name]
    target, _ = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target, **extra))
    assert rc == 0, res.get("msg")
    assert res["changed"] is True
    assert res["mode"] == mode
    written = target.read_bytes()
    assert written[:MiB] == image.content[:MiB]  # the first MiB, written last, is there
    assert written == image.content  # holes read as zeros: the junk is gone
    assert res["ranges"] == len(image.bmap["ranges"])
    assert res["bytes_written"] == sum(r["end"] - r["start"] for r in image.bmap["ranges"])
    assert set(res["timings"]) >= {"download", "decompress", "hash", "write", "sync", "verify", "total"}
    assert res["throughput_mbps"] > 0


def test_sparse_raw_downloads_only_data(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target))
    assert rc == 0, res.get("msg")
    data = sum(r["end"] - r["start"] for r in image.bmap["ranges"])
    assert data < len(image.content) // 2
    assert res["bytes_downloaded"] <= data + 1  # +1: the probe's one byte
    assert res["bytes_zeroed"] == len(image.content) - data - MiB + sum(
        min(r["end"], MiB) - r["start"] for r in image.bmap["ranges"] if r["start"] < MiB
    )


def test_bmap_url_and_bigger_target(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["zstd"]
    target, junk = junk_target(tmp_path, len(image.content) + 3 * MiB)
    args = base_args(server, image, target)
    del args["bmap"]
    args["bmap_url"] = "/bmap/sparse"  # relative to url, as the service hands it out
    rc, res = run_module(tmp_path, args)
    assert rc == 0, res.get("msg")
    written = target.read_bytes()
    assert written[: len(image.content)] == image.content
    assert written[len(image.content) :] == junk[len(image.content) :]  # past the image: untouched


def test_check_mode_writes_nothing(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, {**base_args(server, image, target), "_ansible_check_mode": True})
    assert rc == 0, res.get("msg")
    assert res["changed"] is True
    assert target.read_bytes() == junk


# --------------------------------------------------------------------------------------------------
# corruption


@pytest.mark.parametrize("workers", [1, 4])
def test_flipped_bit_fails_naming_range_and_keeps_head_unwritten(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], workers: int
) -> None:
    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target, download_workers=workers)
    args["url"] = f"{server.base}/img/sparse-flipped.raw"
    rc, res = run_module(tmp_path, args)
    assert rc != 0
    bad = next(r for r in image.bmap["ranges"] if r["start"] <= 34 * MiB + 12345 < r["end"])
    assert "image corrupt" in res["msg"]
    assert f"[{bad['start']}, {bad['end']})" in res["msg"]
    assert res["error"] == "image_corrupt" and res["image_corrupt"] is True
    assert res["bad_range"]["start"] == bad["start"]
    head = target.read_bytes()[:MiB]
    assert head != image.content[:MiB]
    assert head == bytes(MiB)  # wiped first, never written: cannot boot


def test_corrupt_zstd_fails(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["zstd"]
    target, _ = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target)
    args["url"] = f"{server.base}/img/sparse-bad.raw.zst"
    rc, res = run_module(tmp_path, args)
    assert rc != 0
    assert res["error"] == "image_corrupt", res
    assert "image corrupt" in res["msg"]
    assert target.read_bytes()[:MiB] == bytes(MiB)


def test_zstd_declared_but_content_raw_fails(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target, compression="zstd"))
    assert rc != 0
    assert res["error"] == "image_corrupt"


def test_bmap_for_other_image_is_rejected_before_writing(
    tmp_path: Path, server: ImageServer, images: dict[str, Image]
) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target, sha256=images["dense"].bmap["sha256"]))
    assert rc != 0
    assert res["error"] == "bmap_invalid"
    assert target.read_bytes() == junk


# --------------------------------------------------------------------------------------------------
# network trouble


@pytest.mark.parametrize(("name", "cut_at"), [("sparse", 3 * MiB + 12345), ("dense", 5 * MiB), ("zstd", 200_000)])
def test_resumes_after_dropped_connection(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], name: str, cut_at: int
) -> None:
    image = images[name]
    target, _ = junk_target(tmp_path, len(image.content))
    server.faults.drop_after = cut_at
    rc, res = run_module(tmp_path, base_args(server, image, target))
    assert rc == 0, res.get("msg")
    assert server.faults.drops == 1
    assert res["retries"] >= 1
    assert target.read_bytes() == image.content


@pytest.mark.parametrize("cut_at", [None, 7 * MiB + 5])
def test_server_without_range_support(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], cut_at: int | None
) -> None:
    """No Range: the raw image streams whole; a resume re-reads and discards the prefix."""
    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    server.faults.ignore_range = True
    server.faults.drop_after = cut_at
    rc, res = run_module(tmp_path, base_args(server, image, target))
    assert rc == 0, res.get("msg")
    assert res["mode"] == "raw-stream"
    assert target.read_bytes() == image.content
    if cut_at:
        assert res["retries"] >= 1
        assert res["bytes_downloaded"] >= len(image.content) + cut_at


@pytest.mark.parametrize("name", ["sparse", "zstd"])
def test_outage_longer_than_retry_timeout_fails_cleanly(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], name: str
) -> None:
    image = images[name]
    target, _ = junk_target(tmp_path, len(image.content))
    server.faults.drop_after = 2 * MiB if name == "sparse" else 100_000
    server.faults.outage = True
    rc, res = run_module(tmp_path, base_args(server, image, target, retry_timeout=1.5))
    assert rc != 0
    assert res["error"] == "download_failed", res
    assert "no progress" in res["msg"]
    assert res["retries"] >= 2  # it did back off and retry before giving up
    assert res["timings"]["total"] < 30
    assert target.read_bytes()[:MiB] == bytes(MiB)


def test_wrong_token_fails_before_writing(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target, token="wrong"))
    assert rc != 0
    assert res["error"] == "auth_failed"
    assert "wrong" not in json.dumps(res)  # no_log: the token is not echoed
    assert target.read_bytes() == junk


def test_missing_image_fails(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target)
    args["url"] = f"{server.base}/img/nope.raw"
    rc, res = run_module(tmp_path, args)
    assert rc != 0
    assert res["error"] == "not_found"
    assert target.read_bytes() == junk


# --------------------------------------------------------------------------------------------------
# target checks


def test_image_larger_than_target_fails_before_writing(
    tmp_path: Path, server: ImageServer, images: dict[str, Image]
) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content) - 4096)
    rc, res = run_module(tmp_path, base_args(server, image, target))
    assert rc != 0
    assert res["error"] == "target_too_small"
    assert target.read_bytes() == junk
    assert res["bytes_downloaded"] <= 1


@pytest.mark.parametrize("key", ["chunk_size", "range_chunk_size"])
@pytest.mark.parametrize("value", [0, MiB - 4096, MiB + 1])
def test_chunk_sizes_off_the_mib_grid_fail_before_writing(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], key: str, value: int
) -> None:
    image = images["sparse"]
    target, junk = junk_target(tmp_path, len(image.content))
    rc, res = run_module(tmp_path, base_args(server, image, target, **{key: value}))
    assert rc != 0
    assert res["error"] == "bad_params" and key in res["msg"]
    assert target.read_bytes() == junk


def test_missing_target_fails(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    rc, res = run_module(tmp_path, base_args(server, images["sparse"], tmp_path / "nope"))
    assert rc != 0
    assert res["error"] == "target_invalid"


# --------------------------------------------------------------------------------------------------
# publish path feeding the writer


def test_publish_zst_then_write(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    """The store decompresses an upload into sparse raw + bmap; the writer reproduces it exactly."""
    image = images["zstd"]
    raw = tmp_path / "store.raw"
    with open(image.raw, "rb") as src:
        bmap = zst_to_raw_with_bmap(src, raw)
    assert bmap == image.bmap
    assert raw.stat().st_blocks * 512 < raw.stat().st_size  # stored sparse
    server.files["/img/store.raw"] = raw
    target, _ = junk_target(tmp_path, bmap["image_size"])
    args = base_args(server, image, target, compression="none", bmap=bmap)
    args["url"] = f"{server.base}/img/store.raw"
    rc, res = run_module(tmp_path, args)
    assert rc == 0, res.get("msg")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == bmap["sha256"]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed (qemu-utils)")
def test_qcow2_upload_imports_to_same_bmap(tmp_path: Path, images: dict[str, Image]) -> None:
    from provisioner.imaging.formats import detect_format, import_image

    image = images["sparse"]
    qcow2 = tmp_path / "up.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(image.raw), str(qcow2)], check=True)
    assert detect_format(qcow2) == "qcow2"
    raw = tmp_path / "store.raw"
    assert import_image(qcow2, raw) == image.bmap
    assert raw.read_bytes() == image.content


def test_corrupt_zst_upload_is_rejected(tmp_path: Path, images: dict[str, Image]) -> None:
    from provisioner.imaging.formats import ImageFormatError

    bad = tmp_path / "bad.raw.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(b"x" * 100_000)[:-20] + b"\0" * 20)
    with pytest.raises(ImageFormatError), open(bad, "rb") as src:
        zst_to_raw_with_bmap(src, tmp_path / "out.raw")
    assert not (tmp_path / "out.raw").exists()


# --------------------------------------------------------------------------------------------------
# through real Ansible


@pytest.mark.skipif(shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="no ansible")
def test_through_ansible_adhoc(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target)
    del args["bmap"]
    args["bmap_url"] = f"{server.base}/bmap/sparse"
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "minimal",  # "localhost | CHANGED => {json}"
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-M",
            str(MODULE.parent),
            # What makes Ansible look in playbooks/module_utils/ (the module's pieces), as it does
            # for every playbook in playbooks/: plugin dirs adjacent to the playbook.
            "--playbook-dir",
            str(MODULE.parent.parent),
            "-m",
            "provisioner_image_write",
            "-a",
            json.dumps(args),
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("=>", 1)[1])
    assert res["changed"] is True
    assert TOKEN not in proc.stdout  # no_log on token
    assert target.read_bytes() == image.content


@pytest.mark.skipif(shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="no ansible")
def test_image_playbook_through_ansible_runner(tmp_path: Path, server: ImageServer, images: dict[str, Image]) -> None:
    """playbooks/image.yml the way workers run it (ansible-runner, ANSIBLE_LIBRARY=playbooks/library):
    Ansible must find the module's pieces in playbooks/module_utils/ (prov_bmap is a symlink) and ship them."""
    from workers.ansible_bridge import run_playbook

    image = images["sparse"]
    target, _ = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target)
    spec = {k: args[k] for k in ("url", "token", "bmap", "sha256", "target")} | {"verify_os_release": False}
    outcome = run_playbook(
        playbook=MODULE.parent.parent / "image.yml",
        inventory=lambda _known_hosts: {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}},
        known_hosts=None,
        extravars={
            "prov_hosts": "localhost",
            "provisioner_allow_local": True,  # the guard refuses local connections otherwise
            "ansible_python_interpreter": sys.executable,
            "provisioner_image": spec,
        },
        ssh_key=None,
        timeout_s=240,
        should_cancel=lambda: False,
        on_event=lambda ev: None,
        work_root=tmp_path,
    )
    assert outcome.ok, (outcome.failures, outcome.tail)
    assert outcome.result["image"]["mode"] == "ranges"
    assert target.read_bytes() == image.content


# --------------------------------------------------------------------------------------------------
# pure helpers of the module's pieces (module_utils; the bmap rules are shared with the service)


def _load_module() -> Any:
    """Loads the module file; run outside AnsiballZ, it adds playbooks/module_utils to the
    ansible.module_utils package path (as Ansible's loader finds them), so its pieces import."""
    spec = importlib.util.spec_from_file_location("provisioner_image_write", MODULE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


writer = _load_module()
from ansible.module_utils import prov_bmap, prov_image_http, prov_image_target  # type: ignore  # noqa: E402


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-0/10", (0, 1, 10)),
        ("bytes 100-199/*", (100, 200, None)),
        ("items 0-1/2", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: tuple[int, int, int | None] | None) -> None:
    assert prov_image_http.parse_content_range(value) == expected


@pytest.mark.parametrize(
    ("ranges", "size", "skip", "holes"),
    [
        ([], 100, 0, [(0, 100)]),
        ([(0, 100)], 100, 0, []),
        ([(10, 20), (30, 40)], 50, 0, [(0, 10), (20, 30), (40, 50)]),
        ([(10, 20)], 50, 15, [(20, 50)]),
        ([(0, 5)], 50, 30, [(30, 50)]),
    ],
)
def test_holes_of(ranges: list[tuple[int, int]], size: int, skip: int, holes: list[tuple[int, int]]) -> None:
    assert prov_bmap.holes_of(ranges, size, skip_below=skip) == holes


@pytest.mark.parametrize(
    ("kind", "wz", "dzd", "method"),
    [
        ("file", 0, 0, "punch"),
        ("block", 1 << 20, 0, "zeroout"),
        ("block", 0, 1, "discard"),
        ("block", 0, 0, "zeroout"),  # the kernel writes the zeros itself: still correct
        ("block", 1 << 20, 1, "zeroout"),
    ],
)
def test_choose_zero_method(kind: str, wz: int, dzd: int, method: str) -> None:
    assert prov_image_target.choose_zero_method(kind, wz, dzd) == method


def test_module_bmap_rules_are_the_services(images: dict[str, Image]) -> None:
    """One source: the writer's prov_bmap is a relative symlink to provisioner/core/bmap_rules.py."""
    from provisioner.core import bmap_rules
    from provisioner.imaging.bmap import validate_bmap

    link = REPO / "playbooks" / "module_utils" / "prov_bmap.py"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == Path(bmap_rules.__file__).resolve() == Path(prov_bmap.__file__).resolve()
    good = images["sparse"].bmap
    bad = {**good, "ranges": list(reversed(good["ranges"]))}
    assert prov_bmap.validate_bmap(good) == validate_bmap(good) == []
    assert prov_bmap.validate_bmap(bad) == validate_bmap(bad) != []


@pytest.mark.skipif(shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="no ansible")
def test_image_playbook_passes_the_device_to_the_shell_as_data(tmp_path: Path, server: ImageServer,
                                                               images: dict[str, Image]) -> None:
    """The os-release check gets the target through the environment: a device name holding shell
    syntax is a name, not a command (templated into the script, this one would run `echo`)."""
    from workers.ansible_bridge import run_playbook

    image = images["sparse"]
    target = tmp_path / 'disk";echo INJECTED=1;"'
    target.write_bytes(random.Random(7).randbytes(len(image.content)))
    spec = {k: v for k, v in base_args(server, image, target).items()
            if k in ("url", "token", "bmap", "sha256", "target")} | {"verify_os_release": True}
    outcome = run_playbook(
        playbook=MODULE.parent.parent / "image.yml",
        inventory=lambda _known_hosts: {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}},
        known_hosts=None,
        extravars={"prov_hosts": "localhost", "provisioner_allow_local": True,
                   "ansible_python_interpreter": sys.executable, "provisioner_image": spec},
        ssh_key=None, timeout_s=240, should_cancel=lambda: False, on_event=lambda ev: None, work_root=tmp_path,
    )
    assert outcome.ok, (outcome.failures, outcome.tail)
    assert target.read_bytes() == image.content
    assert "INJECTED=1" not in outcome.result["image"]["os_release"], outcome.result["image"]


# --------------------------------------------------------------------------------------------------
# the read-back, the short source and the head's order, in-process: the device is a Target that
# misbehaves on purpose (a disk that loses a write, or one that logs the order of writes)

from ansible.module_utils import prov_image_run  # type: ignore  # noqa: E402


def module_params(server: ImageServer, image: Image, target: Path, **extra: Any) -> dict[str, Any]:
    """The parameters AnsibleModule would hand to run(): the spec's defaults, then ours."""
    params = {k: spec.get("default") for k, spec in writer.ARGUMENT_SPEC.items()}
    params.update(base_args(server, image, target, **extra))
    return params


LOST_WRITE_AT = 34 * MiB + 12345  # inside the sparse image's last big data range


class LostWriteTarget(prov_image_target.Target):  # type: ignore[misc, name-defined]
    """A disk that drops one write: whatever covers ``at`` is written with one byte flipped (the
    buffer itself stays intact, so the streaming sha256 is happy; only a read-back can tell). The
    writer's own wipes of the first MiB (all zeros) are written as they are."""

    at = LOST_WRITE_AT

    def write(self, offset: int, view: memoryview, aligned_buffer: bool) -> bool:
        if offset <= self.at < offset + len(view) and any(view):
            bad = mmap.mmap(-1, len(view))  # page-aligned like the writer's own buffers
            bad[:] = view
            bad[self.at - offset] ^= 0x01
            return bool(super().write(offset, memoryview(bad), aligned_buffer))
        return bool(super().write(offset, view, aligned_buffer))


@pytest.mark.parametrize(
    ("name", "extra", "path", "where"),
    [
        ("sparse", {}, "compare", "body"),  # O_DIRECT: each chunk read back and compared with its buffer
        ("zstd", {}, "compare", "body"),  # the stream path's checker threads
        ("sparse", {"direct_io": "no"}, "rehash", "body"),  # buffered: whole ranges re-read and re-hashed
        # The first MiB is written last from its own buffer: read back after that write, compared.
        ("sparse", {}, "compare", "head"),
        ("dense", {}, "compare", "head"),
        ("zstd", {}, "compare", "head"),
        ("dense", {"direct_io": "no"}, "rehash", "head"),  # buffered: the head's ranges re-read, re-hashed
    ],
)
def test_a_write_the_disk_lost_fails_verification(
    tmp_path: Path,
    server: ImageServer,
    images: dict[str, Image],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    extra: dict[str, Any],
    path: str,
    where: str,
) -> None:
    image = images[name]
    if where == "head":
        bad = next(r for r in image.bmap["ranges"] if r["start"] < MiB)
        at = bad["start"] + min(4096 + 7, min(bad["end"], MiB) - bad["start"] - 1)
    else:
        at = LOST_WRITE_AT
        bad = next(r for r in image.bmap["ranges"] if r["start"] <= at < r["end"])
    target, _ = junk_target(tmp_path, len(image.content))
    monkeypatch.setattr(LostWriteTarget, "at", at)
    monkeypatch.setattr(prov_image_run, "Target", LostWriteTarget)
    res = prov_image_run.run(module_params(server, image, target, **extra))
    assert res.get("failed"), res
    assert res["error"] == "verify_failed", res
    assert res["image_corrupt"] is False  # the disk's fault, not the image's
    assert res["bad_range"] == {"start": bad["start"], "end": bad["end"]}, res
    assert ("reads back different" if path == "compare" else "reads back as") in res["msg"], res["msg"]
    if path == "compare" and name == "sparse":
        assert res["direct_io"] is True  # (tmp_path must allow O_DIRECT for this case to mean anything)
    # the head was never written, or a wrong one was wiped again: the disk cannot boot
    assert target.read_bytes()[:MiB] == bytes(MiB)


@pytest.mark.parametrize(("name", "cut"), [("sparse", 4096), ("dense", 1), ("zstd", 1000)])
@pytest.mark.parametrize("ranged", [True, False])
def test_a_short_source_fails(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], name: str, cut: int, ranged: bool
) -> None:
    """The served file ends early (truncated upload, wrong file): image_corrupt, head never written."""
    image = images[name]
    short = tmp_path / f"short-{image.raw.name}"
    short.write_bytes(image.raw.read_bytes()[:-cut])
    server.files[f"/img/{short.name}"] = short
    server.faults.ignore_range = not ranged
    target, junk = junk_target(tmp_path, len(image.content))
    args = base_args(server, image, target)
    args["url"] = f"{server.base}/img/{short.name}"
    rc, res = run_module(tmp_path, args)
    assert rc != 0
    assert res["error"] == "image_corrupt", res
    # refused before touching the target (a Range server tells the size), or the head wiped first
    assert target.read_bytes()[:MiB] in (junk[:MiB], bytes(MiB))


class OrderLogTarget(prov_image_target.Target):  # type: ignore[misc, name-defined]
    log: list[tuple[int, int, bool]] = []  # (offset, length, all zeros)

    def write(self, offset: int, view: memoryview, aligned_buffer: bool) -> bool:
        OrderLogTarget.log.append((offset, len(view), not any(view)))
        return bool(super().write(offset, view, aligned_buffer))


@pytest.mark.parametrize("name", ["sparse", "dense", "zstd"])
def test_first_mib_is_wiped_first_and_written_last(
    tmp_path: Path, server: ImageServer, images: dict[str, Image], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    image = images[name]
    target, _ = junk_target(tmp_path, len(image.content))
    OrderLogTarget.log = []
    monkeypatch.setattr(prov_image_run, "Target", OrderLogTarget)
    res = prov_image_run.run(module_params(server, image, target))
    assert not res.get("failed"), res
    log = OrderLogTarget.log
    assert log[0] == (0, MiB, True)  # the old head wiped before anything else
    head = [i for i, (off, _, _) in enumerate(log) if off < MiB]
    assert head == [0, len(log) - 1]  # nothing else touched the first MiB ...
    assert log[-1][:2] == (0, MiB)  # ... until the image's head, written last
    assert all(off >= MiB for off, _, _ in log[1:-1])
    assert target.read_bytes() == image.content
