"""Benchmark the image writer against ``dd bs=4M conv=fsync`` and ``bmaptool copy``.

One run, same disk, same images:
  (a) a dense image: random bytes end to end;
  (b) a sparse image: SIZE GiB with about a quarter of it data (random extents of 64 KiB-16 MiB
      scattered like files, plus a small "metadata" extent every 128 MiB, like ext4 block groups).

The target is a loop device (``losetup --direct-io=on``, so writes really reach the disk) over a
file pre-filled with old data like a used disk, or the plain file with ``--target file``. dd and
our writer leave exactly the image on it; bmaptool leaves the old data in the holes (by design),
which is why it is checked on data ranges only.

Our writer is the Ansible module run as Ansible would run it, fetching from an HTTP server on
127.0.0.1 (sendfile, Range, bearer token, like the service); its times include the sha256 check of
every range and, unless marked "noverify", reading every range back from the device.

Other work on the machine (VMs, test suites) makes disk and CPU figures noisy: runs are interleaved
tool by tool and the median is reported with the spread.

Run as root (drop_caches, losetup):
    .venv/bin/python bench/bench_writer.py --size-gib 4
    .venv/bin/python bench/bench_writer.py --size-gib 1 --repeat 1       # quick
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisioner.imaging.bmap import bmap_from_file, data_bytes  # noqa: E402
from provisioner.imaging.formats import raw_to_zst  # noqa: E402

MODULE = REPO / "playbooks" / "library" / "provisioner_image_write.py"
MiB = 1 << 20
GiB = 1 << 30
TOKEN = "bench-token"
TOOLS = ["dd", "bmaptool", "ours", "ours-noverify", "ours-zstd"]


# --------------------------------------------------------------------------------------------------
# images


def write_random(f: Any, offset: int, length: int) -> None:
    f.seek(offset)
    while length:
        n = min(length, 16 * MiB)
        f.write(os.urandom(n))
        length -= n


def sparse_layout(size: int, data: int, seed: int = 42) -> list[tuple[int, int]]:
    """Non-overlapping (offset, length) extents totalling about ``data`` bytes, fs-like."""
    rnd = random.Random(seed)
    taken: list[tuple[int, int]] = []
    for group in range(0, size, 128 * MiB):  # block-group metadata
        taken.append((group, 64 * 1024))
    total = sum(n for _, n in taken)
    while total < data:
        length = min(int(2 ** rnd.uniform(16, 24)) // 4096 * 4096, data - total) or 4096
        start = rnd.randrange(0, size - length) // 4096 * 4096
        if any(start < s + n and s < start + length for s, n in taken):
            continue
        taken.append((start, length))
        total += length
    return sorted(taken)


def make_images(workdir: Path, size: int, data_fraction: float) -> dict[str, Path]:
    dense = workdir / f"dense-{size}.raw"
    sparse = workdir / f"sparse-{size}.raw"
    if not dense.exists():
        print(f"creating {dense} ...", flush=True)
        tmp = dense.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            write_random(f, 0, size)
        tmp.rename(dense)
    if not sparse.exists():
        print(f"creating {sparse} ...", flush=True)
        tmp = sparse.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.truncate(size)
            for off, n in sparse_layout(size, int(size * data_fraction)):
                write_random(f, off, n)
        tmp.rename(sparse)
    return {"dense": dense, "sparse": sparse}


def prepare_sidecars(image: Path) -> tuple[dict[str, Any], Path, Path]:
    """Our bmap (json), bmaptool's bmap (xml) and a .zst copy; cached next to the image."""
    ours = image.with_suffix(".bmap.json")
    if not ours.exists():
        t0 = time.monotonic()
        ours.write_text(json.dumps(bmap_from_file(image)))
        print(f"  our bmap for {image.name}: {time.monotonic() - t0:.1f}s", flush=True)
    theirs = image.with_suffix(".bmap")
    if not theirs.exists():
        t0 = time.monotonic()
        subprocess.run(["bmaptool", "create", "-o", str(theirs), str(image)], check=True, capture_output=True)
        print(f"  bmaptool create for {image.name}: {time.monotonic() - t0:.1f}s", flush=True)
    zst = image.with_suffix(".raw.zst")
    if not zst.exists():
        t0 = time.monotonic()
        raw_to_zst(image, zst, level=1)
        print(f"  zstd for {image.name}: {time.monotonic() - t0:.1f}s", flush=True)
    return json.loads(ours.read_text()), theirs, zst


# --------------------------------------------------------------------------------------------------
# HTTP server (what the service does: Range + bearer token, zero-copy)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers then body: Nagle + delayed ACK would stall each request
    files: dict[str, Path] = {}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.files.get(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or path is None:
            self.send_response(401 if path else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(size, int(last) + 1) if last else size, 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            offset = start
            while offset < end:
                sent = os.sendfile(self.connection.fileno(), f.fileno(), offset, min(end - offset, 64 * MiB))
                if sent == 0:
                    break
                offset += sent


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the writer's probe hangs up on purpose


def start_server(files: dict[str, Path]) -> tuple[http.server.ThreadingHTTPServer, str]:
    _Handler.files = files
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


# --------------------------------------------------------------------------------------------------
# target


class Target:
    """One target for the whole run: a file pre-filled with old data ("a used disk"), optionally
    behind a loop device.

    Re-creating it per run would make every run pay ext4 allocation and (with -o discard) a 4 GiB
    discard of the old file, which dominated the noise on this VM.
    """

    def __init__(self, directory: Path, size: int, loop: bool) -> None:
        self.file = directory / "bench-target.img"
        self.size = size
        self.loop = loop
        self.dev: str | None = None

    def setup(self, old_data: Path) -> str:
        print(f"preparing target {self.file} ({self.size / GiB:.2f} GiB of old data) ...", flush=True)
        subprocess.run(["fallocate", "-l", str(self.size), str(self.file)], check=True)
        subprocess.run(
            ["dd", f"if={old_data}", f"of={self.file}", "bs=4M", "conv=notrunc,fsync", "status=none"], check=True
        )
        if self.loop:
            out = subprocess.run(
                ["losetup", "--find", "--show", "--direct-io=on", str(self.file)],
                check=True,
                capture_output=True,
                text=True,
            )
            self.dev = out.stdout.strip()
        return self.path

    @property
    def path(self) -> str:
        return self.dev or str(self.file)

    def cleanup(self) -> None:
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], check=False)
            self.dev = None
        self.file.unlink(missing_ok=True)

    def matches(self, bmap: dict[str, Any], data_only: bool) -> bool:
        """Does the target hold the image? ``data_only``: only its data ranges (bmaptool skips holes)."""
        spans = [(r["start"], r["end"]) for r in bmap["ranges"]] if data_only else [(0, bmap["image_size"])]
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for i, (start, end) in enumerate(spans):
                f.seek(start)
                h = hashlib.sha256() if data_only else digest
                left = end - start
                while left:
                    chunk = f.read(min(left, 16 * MiB))
                    if not chunk:
                        return False
                    h.update(chunk)
                    left -= len(chunk)
                if data_only and h.hexdigest() != bmap["ranges"][i]["sha256"]:
                    return False
        return data_only or digest.hexdigest() == bmap["sha256"]


def prepare_cache(mode: str, source: Path) -> None:
    """warm: the source is in page cache (an image server keeps hot images cached); cold: nothing is."""
    if mode == "cold":
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    with open(source, "rb") as f:
        while f.read(64 * MiB):
            pass


# --------------------------------------------------------------------------------------------------
# runs


@dataclass
class Run:
    image: str
    tool: str
    seconds: float
    ok: bool
    detail: dict[str, Any]


def run_tool(
    tool: str, image: Path, bmap: dict[str, Any], bmap_xml: Path, zst: Path, base: str, dest: str, args_dir: Path
) -> tuple[float, dict[str, Any]]:
    if tool == "dd":
        cmd = ["dd", f"if={image}", f"of={dest}", "bs=4M", "conv=fsync,notrunc", "status=none"]
    elif tool == "bmaptool":
        cmd = ["bmaptool", "-q", "copy", "--bmap", str(bmap_xml), str(image), dest]
    else:
        args = {
            "url": f"{base}/{zst.name if tool == 'ours-zstd' else image.name}",
            "token": TOKEN,
            "bmap": bmap,
            "sha256": bmap["sha256"],
            "target": dest,
            "compression": "zstd" if tool == "ours-zstd" else "none",
            "verify": tool != "ours-noverify",
        }
        args_file = args_dir / "args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        cmd = [sys.executable, str(MODULE), str(args_file)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    detail: dict[str, Any] = {}
    if tool.startswith("ours"):
        try:
            detail = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            detail = {"failed": True, "msg": proc.stdout[-2000:] + proc.stderr[-2000:]}
    if proc.returncode != 0:
        detail.setdefault("failed", True)
        detail.setdefault("msg", proc.stderr[-2000:])
    return seconds, detail


def bench(opts: argparse.Namespace) -> list[Run]:
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = int(opts.size_gib * GiB) // MiB * MiB
    images = make_images(workdir, size, opts.data_fraction)
    sidecars = {name: prepare_sidecars(path) for name, path in images.items()}
    files = {f"/{p.name}": p for p in images.values()}
    files.update({f"/{zst.name}": zst for _, _, zst in sidecars.values()})
    srv, base = start_server(files)
    loop = opts.target == "loop" and shutil.which("losetup") is not None
    target = Target(Path(opts.target_dir or workdir), size + 64 * MiB, loop)
    runs: list[Run] = []
    try:
        dest = target.setup(images["dense"])
        for name, image in images.items():
            bmap, bmap_xml, zst = sidecars[name]
            print(
                f"\n{name}: {size / GiB:.2f} GiB, data {data_bytes(bmap) / GiB:.2f} GiB, "
                f"{len(bmap['ranges'])} ranges, zst {zst.stat().st_size / GiB:.2f} GiB",
                flush=True,
            )
            for rep in range(opts.repeat):
                for tool in opts.tools:
                    prepare_cache(opts.cache, zst if tool == "ours-zstd" else image)
                    seconds, detail = run_tool(tool, image, bmap, bmap_xml, zst, base, dest, workdir)
                    ok = not detail.get("failed")
                    if ok and opts.check:
                        ok = target.matches(bmap, data_only=tool == "bmaptool")
                    runs.append(Run(name, tool, seconds, ok, detail))
                    flag = "" if ok else f"  FAILED {detail.get('msg', 'content mismatch')}"
                    print(
                        f"  [{rep + 1}/{opts.repeat}] {tool:14s} {seconds:7.2f}s "
                        f"{size / 1e6 / seconds:8.0f} MB/s{flag}",
                        flush=True,
                    )
    finally:
        target.cleanup()
        srv.shutdown()
    return runs


def report(runs: list[Run], size: int, opts: argparse.Namespace) -> None:
    print(
        f"\nmedian of {opts.repeat} run(s) [min-max]; MB/s = image size / wall time, fsync included; "
        f"target: {'loop device (direct-io)' if opts.target == 'loop' else 'regular file'} in "
        f"{opts.target_dir or opts.workdir}; cache: {opts.cache}; {os.cpu_count()} CPUs; kernel {platform.release()}"
    )
    header = (
        f"{'image':7s} {'tool':14s} {'seconds':>8s} {'[min-max]':>14s} {'MB/s':>7s} {'vs dd':>7s} "
        f"{'vs bmaptool':>12s}  ok"
    )
    print(header)
    print("-" * len(header))
    for name in dict.fromkeys(r.image for r in runs):
        times: dict[str, list[float]] = {}
        for tool in opts.tools:
            t = [r.seconds for r in runs if r.image == name and r.tool == tool]
            if t:
                times[tool] = t
        med = {tool: statistics.median(t) for tool, t in times.items()}
        for tool, seconds in med.items():
            ok = all(r.ok for r in runs if r.image == name and r.tool == tool)
            spread = f"[{min(times[tool]):.2f}-{max(times[tool]):.2f}]"
            vs_dd = f"{med['dd'] / seconds:6.2f}x" if "dd" in med else "-"
            vs_bt = f"{med['bmaptool'] / seconds:11.2f}x" if "bmaptool" in med else "-"
            print(
                f"{name:7s} {tool:14s} {seconds:8.2f} {spread:>14s} {size / 1e6 / seconds:7.0f} {vs_dd:>7s} "
                f"{vs_bt:>12s}  {'yes' if ok else 'NO'}"
            )
    print("\nour writer's stage busy time (s, summed over threads; last run of each):")
    for r in runs:
        if r.tool.startswith("ours") and r.detail.get("timings") and r is last_of(runs, r.image, r.tool):
            t = r.detail["timings"]
            print(
                f"  {r.image:7s} {r.tool:14s} "
                + " ".join(f"{k}={v:.2f}" for k, v in t.items())
                + f" retries={r.detail.get('retries')} zero={r.detail.get('zero_method')}"
                + f" direct={r.detail.get('direct_io')}"
            )


def last_of(runs: list[Run], image: str, tool: str) -> Run:
    return [r for r in runs if r.image == image and r.tool == tool][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4.0, help="image size (default 4)")
    ap.add_argument("--data-fraction", type=float, default=0.25, help="data share of the sparse image")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/work/scratch/bench", help="images + target (needs ~3x size)")
    ap.add_argument("--target", choices=["loop", "file"], default="loop")
    ap.add_argument("--cache", choices=["warm", "cold"], default="warm", help="source image in page cache?")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma list of " + ",".join(TOOLS))
    ap.add_argument("--target-dir", help="where the target file goes (default: workdir; /dev/shm = no disk)")
    ap.add_argument("--check", action="store_true", help="hash the target after each run (bmaptool: data only)")
    opts = ap.parse_args()
    opts.tools = [t for t in opts.tools.split(",") if t]
    unknown = set(opts.tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {sorted(unknown)}")
    if "bmaptool" in opts.tools and shutil.which("bmaptool") is None:
        print("bmaptool not found (apt-get install bmap-tools): skipping it")
        opts.tools.remove("bmaptool")
    runs = bench(opts)
    report(runs, int(opts.size_gib * GiB) // MiB * MiB, opts)


if __name__ == "__main__":
    main()
