"""Benchmark the image writer against ``curl | dd bs=4M oflag=direct`` and ``bmaptool copy``.

One run, same target, same images, same HTTP server:
  (a) a dense image: random bytes end to end;
  (b) a sparse image: SIZE GiB with about a quarter of it data (random extents of 64 KiB-16 MiB
      scattered like files, plus a small "metadata" extent every 128 MiB, like ext4 block groups).

Fair by construction:
* Same start. Before EVERY contender the whole target is overwritten with random bytes (O_DIRECT,
  from a file of its own, unlike either image) and flushed, so it is non-sparse and a range a tool
  skips reads back as junk. The target is a loop device (``losetup --direct-io=on``, so writes reach
  the backing file) over a file of SIZE + 64 MiB, or the plain file with ``--target file``.
* Same source. Every contender reads the image over HTTP from one server on 127.0.0.1 that serves
  the file like the service's image route (sendfile, Range, the token in the Authorization header):
  dd through ``curl -H 'Authorization: Bearer …'``, our writer with its ``token`` parameter, and
  bmaptool with the token as the password of the URL (bmaptool cannot send a bearer header; urllib
  answers the server's Basic challenge: one 401 round trip more). bmaptool streams the whole image
  over HTTP (it cannot Range), checks the sha256 of each range of its bmap, skips holes.
* Same durability. dd writes with O_DIRECT and ``conv=fsync``; ours with O_DIRECT and fsync;
  bmaptool fsyncs. Then the bench itself fsyncs the target and drops its page cache (BLKFLSBUF)
  before it stops the clock, for all of them alike.
* Checked by default (``--no-check`` to skip): after each contender the bench hashes the target's
  mapped ranges (the bmap's data ranges) and compares each with the bmap's sha256. That is the
  contract all three share. Unmapped ranges are not part of bmaptool's contract (it leaves them
  untouched, by design), so the "holes" column only reports whether they read as zeros: dd and our
  writer must leave zeros (ours zeroes holes on purpose: a whole-disk image must not carry the old
  disk's data), bmaptool is expected to show "old".

Rows: ``dd``, ``bmaptool``, ``ours`` (sha256 of every range checked while streaming, then every
range read back from the device and compared), ``ours-noverify`` (the same without the read-back),
``ours-zstd`` (the .raw.zst, one stream, with read-back). The read-back's cost is its own line:
ours / ours-noverify - 1.

Other work on the machine (VMs, test suites) makes disk and CPU figures noisy: runs are interleaved
tool by tool, the median is reported with the spread, and ``uptime`` is printed before and after.

Run as root (losetup, BLKFLSBUF):
    .venv/bin/python bench/bench_writer.py --size-gib 1
    .venv/bin/python bench/bench_writer.py --size-gib 1 --repeat 1       # quick
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import http.server
import json
import os
import platform
import random
import resource
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
from provisioner.imaging.bmap_xml import to_bmaptool_xml  # noqa: E402
from provisioner.imaging.formats import raw_to_zst  # noqa: E402

MODULE = REPO / "playbooks" / "library" / "provisioner_image_write.py"
MiB = 1 << 20
GiB = 1 << 30
TOKEN = "bench-token"
TOOLS = ["dd", "bmaptool", "ours", "ours-noverify", "ours-zstd"]
BLKFLSBUF = 0x1261  # _IO(0x12, 97)
TARGET_KINDS = {
    "loop": "loop device (direct-io), refilled with random bytes before each run",
    "file": "regular file, refilled with random bytes before each run",
}


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


def make_old_data(workdir: Path, size: int) -> Path:
    """Random bytes unlike either image: what the target holds before every contender."""
    old = workdir / f"old-{size}.raw"
    if not old.exists():
        print(f"creating {old} ...", flush=True)
        tmp = old.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            write_random(f, 0, size)
        tmp.rename(old)
    return old


def make_images(workdir: Path, size: int, data_fraction: float, names: list[str]) -> dict[str, Path]:
    dense = workdir / f"dense-{size}.raw"
    sparse = workdir / f"sparse-{size}.raw"
    if "dense" in names and not dense.exists():
        print(f"creating {dense} ...", flush=True)
        tmp = dense.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            write_random(f, 0, size)
        tmp.rename(dense)
    if "sparse" in names and not sparse.exists():
        print(f"creating {sparse} ...", flush=True)
        tmp = sparse.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.truncate(size)
            for off, n in sparse_layout(size, int(size * data_fraction)):
                write_random(f, off, n)
        tmp.rename(sparse)
    return {name: path for name, path in (("dense", dense), ("sparse", sparse)) if name in names}


def prepare_sidecars(image: Path) -> tuple[dict[str, Any], Path, Path]:
    """Our bmap (json), the same bmap in bmaptool's XML and a .zst copy; cached next to the image.

    bmaptool gets our ranges (not its own ``bmaptool create``, which maps only allocated blocks and
    so leaves out the short zero gaps our bmap merges into ranges): every tool writes and is checked
    on the same mapped ranges."""
    ours = image.with_suffix(".bmap.json")
    if not ours.exists():
        t0 = time.monotonic()
        ours.write_text(json.dumps(bmap_from_file(image)))
        print(f"  our bmap for {image.name}: {time.monotonic() - t0:.1f}s", flush=True)
    theirs = image.with_suffix(".bmap")  # the same ranges and hashes in bmaptool's XML
    theirs.write_text(to_bmaptool_xml(json.loads(ours.read_text())))
    zst = image.with_suffix(".raw.zst")
    if not zst.exists():
        t0 = time.monotonic()
        raw_to_zst(image, zst, level=1)
        print(f"  zstd for {image.name}: {time.monotonic() - t0:.1f}s", flush=True)
    return json.loads(ours.read_text()), theirs, zst


# --------------------------------------------------------------------------------------------------
# HTTP server (what the service's image route does: Range + token in the Authorization header,
# zero-copy)


def authorized(header: str | None) -> bool:
    """The service's route takes only ``Bearer <token>``; bmaptool can only send Basic credentials
    from the URL, so the bench also takes Basic with the same token as the password."""
    if header == f"Bearer {TOKEN}":
        return True
    if header and header.startswith("Basic "):
        try:
            return base64.b64decode(header[6:]).decode().partition(":")[2] == TOKEN
        except ValueError:
            return False
    return False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers then body: Nagle + delayed ACK would stall each request
    files: dict[str, Path] = {}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.files.get(self.path)
        if path is None or not authorized(self.headers.get("Authorization")):
            self.send_response(404 if path is None else 401)
            if path is not None:
                self.send_header("WWW-Authenticate", 'Basic realm="images"')
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


def start_server(files: dict[str, Path], bind: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, str]:
    _Handler.files = files
    srv = _Server((bind, 0), _Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://{bind}:{srv.server_address[1]}"


# --------------------------------------------------------------------------------------------------
# target


class Target:
    """One target for the whole run (re-creating the file per run would make every run pay ext4
    allocation), a loop device over a file, refilled with random old data before every contender."""

    def __init__(self, directory: Path, size: int, loop: bool) -> None:
        self.file = directory / "bench-target.img"
        self.size = size
        self.loop = loop
        self.dev: str | None = None

    def setup(self) -> str:
        subprocess.run(["fallocate", "-l", str(self.size), str(self.file)], check=True)
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

    def refill(self, old_data: Path) -> None:
        """Overwrite the whole target with ``old_data`` (random, non-sparse) and flush it: every
        contender starts from the same used disk, and a hole punched by the last one is gone."""
        subprocess.run(
            ["dd", f"if={old_data}", f"of={self.path}", "bs=4M", "oflag=direct", "conv=notrunc,fsync", "status=none"],
            check=True,
        )
        flush(self.path)

    def cleanup(self) -> None:
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], check=False)
            self.dev = None
        self.file.unlink(missing_ok=True)

    def check(self, bmap: dict[str, Any], old_data: Path) -> tuple[bool, str]:
        """(every mapped range hashes as in the bmap, what the holes read as: zeros / old / mixed)."""
        mapped_ok = True
        with open(self.path, "rb", buffering=0) as f:
            for r in bmap["ranges"]:
                if sha256_of(f, r["start"], r["end"]) != r["sha256"]:
                    mapped_ok = False
                    break
            holes = holes_state(f, bmap, old_data)
        return mapped_ok, holes


def sha256_of(f: Any, start: int, end: int) -> str:
    h = hashlib.sha256()
    f.seek(start)
    left = end - start
    while left:
        chunk = f.read(min(left, 16 * MiB))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest() if not left else "short"


def holes_state(f: Any, bmap: dict[str, Any], old_data: Path) -> str:
    """``zeros`` when every unmapped byte of the image reads as zero, "old" when all still hold the
    old data, "mixed" otherwise (or "none" for an image without holes)."""
    states: set[str] = set()
    pos = 0
    spans = [(r["start"], r["end"]) for r in bmap["ranges"]] + [(bmap["image_size"], bmap["image_size"])]
    with open(old_data, "rb", buffering=0) as old:
        for start, end in spans:
            a = pos
            while a < start:
                n = min(start - a, 16 * MiB)
                f.seek(a)
                got = f.read(n)
                if got == bytes(n):
                    states.add("zeros")
                else:
                    old.seek(a)
                    states.add("old" if got == old.read(n) else "mixed")
                a += n
            pos = end
    if not states:
        return "none"
    return states.pop() if len(states) == 1 else "mixed"


def flush(path: str) -> None:
    """fsync, and drop the block device's page cache, so the next reader reads the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        try:
            fcntl.ioctl(fd, BLKFLSBUF)
        except OSError:
            pass  # a regular file
    finally:
        os.close(fd)


def prepare_cache(mode: str, source: Path) -> None:
    """warm: the source is in page cache (an image server keeps hot images cached); cold: nothing is."""
    if mode == "cold":
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    with open(source, "rb") as f:
        while f.read(64 * MiB):
            pass


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# --------------------------------------------------------------------------------------------------
# runs


@dataclass
class Run:
    image: str
    tool: str
    seconds: float
    ok: bool
    holes: str
    detail: dict[str, Any]


def cpu_of_children() -> float:
    """User + system CPU seconds of every finished child (curl, dd, bmaptool, our module)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tool_command(
    tool: str, url: str, bmap_xml: Path, dest: str, args_file: Path, module_path: Path = MODULE
) -> list[str]:
    if tool == "dd":
        return [
            "bash", "-o", "pipefail", "-c",
            f"curl -sfS -H 'Authorization: Bearer {TOKEN}' '{url}' "
            f"| dd of='{dest}' bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc status=none",
        ]  # fmt: skip
    if tool == "bmaptool":
        return [
            "bmaptool",
            "-q",
            "copy",
            "--bmap",
            str(bmap_xml),
            url.replace("http://", f"http://bench:{TOKEN}@"),
            dest,
        ]
    return [sys.executable, str(module_path), str(args_file)]


def run_tool(
    tool: str,
    image: Path,
    bmap: dict[str, Any],
    bmap_xml: Path,
    zst: Path,
    base: str,
    dest: str,
    args_dir: Path,
    writer_args: dict[str, Any],
    module_path: Path = MODULE,
) -> tuple[float, dict[str, Any]]:
    args_file = args_dir / "args.json"
    source = zst if tool == "ours-zstd" else image
    if tool.startswith("ours"):
        args = {
            "url": f"{base}/{source.name}",
            "token": TOKEN,
            "bmap": bmap,
            "sha256": bmap["sha256"],
            "target": dest,
            "compression": "zstd" if tool == "ours-zstd" else "none",
            "verify": tool != "ours-noverify",
            **writer_args,
        }
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    cmd = tool_command(tool, f"{base}/{source.name}", bmap_xml, dest, args_file, module_path)
    cpu0 = cpu_of_children()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    flush(dest)  # same durability for every contender, inside the clock
    seconds = time.monotonic() - t0
    detail: dict[str, Any] = {"cpu_s": cpu_of_children() - cpu0}
    if tool.startswith("ours"):
        try:
            detail.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            detail.update(failed=True, msg=proc.stdout[-2000:] + proc.stderr[-2000:])
    if proc.returncode != 0:
        detail.setdefault("failed", True)
        detail.setdefault("msg", proc.stderr[-2000:])
    return seconds, detail


def bench(opts: argparse.Namespace) -> list[Run]:
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = int(opts.size_gib * GiB) // MiB * MiB
    images = make_images(workdir, size, opts.data_fraction, opts.images)
    target_size = size + 64 * MiB
    old_data = make_old_data(workdir, target_size)
    sidecars = {name: prepare_sidecars(path) for name, path in images.items()}
    files = {f"/{p.name}": p for p in images.values()}
    files.update({f"/{zst.name}": zst for _, _, zst in sidecars.values()})
    srv, base = start_server(files)
    loop = opts.target == "loop" and shutil.which("losetup") is not None
    target = Target(Path(opts.target_dir or workdir), target_size, loop)
    runs: list[Run] = []
    try:
        dest = target.setup()
        for name, image in images.items():
            bmap, bmap_xml, zst = sidecars[name]
            print(
                f"\n{name}: {size / GiB:.2f} GiB, data {data_bytes(bmap) / GiB:.2f} GiB, "
                f"{len(bmap['ranges'])} ranges, zst {zst.stat().st_size / GiB:.2f} GiB",
                flush=True,
            )
            for rep in range(opts.repeat):
                for tool in opts.tools:
                    target.refill(old_data)
                    prepare_cache(opts.cache, zst if tool == "ours-zstd" else image)
                    seconds, detail = run_tool(
                        tool, image, bmap, bmap_xml, zst, base, dest, workdir, opts.writer_args, opts.module
                    )
                    ok, holes = not detail.get("failed"), "-"
                    if ok and opts.check:
                        ok, holes = target.check(bmap, old_data)
                        if tool != "bmaptool" and holes not in ("zeros", "none"):
                            ok = False  # dd and ours promise the whole image, holes included
                    runs.append(Run(name, tool, seconds, ok, holes, detail))
                    flag = "" if ok else f"  FAILED {detail.get('msg', 'content mismatch')}"
                    print(
                        f"  [{rep + 1}/{opts.repeat}] {tool:14s} {seconds:7.2f}s "
                        f"{size / 1e6 / seconds:8.0f} MB/s cpu {detail['cpu_s']:5.2f}s holes={holes}{flag}",
                        flush=True,
                    )
    finally:
        target.cleanup()
        srv.shutdown()
    return runs


def report(runs: list[Run], size: int, opts: argparse.Namespace, setting: str | None = None) -> None:
    """The table; ``setting`` says where it ran (default: this machine's loop device or file)."""
    setting = setting or (
        f"target: {TARGET_KINDS[opts.target]} in {opts.target_dir or opts.workdir}; source: HTTP on 127.0.0.1, "
        f"cache {opts.cache}; {os.cpu_count()} CPUs; kernel {platform.release()}"
    )
    print(
        f"\nmedian of {opts.repeat} run(s) [min-max]; cpu s = CPU time of the tool's processes (not the "
        f"HTTP server's); MB/s = image size / wall time, data on the device "
        f"(fsync + BLKFLSBUF) included; check: {'mapped ranges vs bmap sha256' if opts.check else 'OFF'}; "
        f"{setting}"
    )
    header = (
        f"{'image':7s} {'tool':14s} {'seconds':>8s} {'[min-max]':>14s} {'MB/s':>7s} {'vs dd':>7s} "
        f"{'vs bmaptool':>12s} {'cpu s':>6s}  {'ok':3s} holes"
    )
    print(header)
    print("-" * len(header))
    medians: dict[tuple[str, str], float] = {}
    for name in dict.fromkeys(r.image for r in runs):
        times: dict[str, list[float]] = {}
        for tool in opts.tools:
            t = [r.seconds for r in runs if r.image == name and r.tool == tool]
            if t:
                times[tool] = t
        med = {tool: statistics.median(t) for tool, t in times.items()}
        medians.update({(name, tool): m for tool, m in med.items()})
        for tool, seconds in med.items():
            mine = [r for r in runs if r.image == name and r.tool == tool]
            ok = all(r.ok for r in mine)
            spread = f"[{min(times[tool]):.2f}-{max(times[tool]):.2f}]"
            vs_dd = f"{med['dd'] / seconds:6.2f}x" if "dd" in med else "-"
            vs_bt = f"{med['bmaptool'] / seconds:11.2f}x" if "bmaptool" in med else "-"
            holes = ",".join(sorted({r.holes for r in mine}))
            cpu = statistics.median(r.detail.get("cpu_s", 0.0) for r in mine)
            print(
                f"{name:7s} {tool:14s} {seconds:8.2f} {spread:>14s} {size / 1e6 / seconds:7.0f} {vs_dd:>7s} "
                f"{vs_bt:>12s} {cpu:6.2f}  {'yes' if ok else 'NO':3s} {holes}"
            )
    print("\nread-back verification on top (ours / ours-noverify - 1, medians):")
    for name in dict.fromkeys(r.image for r in runs):
        if (name, "ours") in medians and (name, "ours-noverify") in medians:
            extra = medians[(name, "ours")] / medians[(name, "ours-noverify")] - 1
            print(f"  {name:7s} {extra * 100:+6.1f} %   (goal <= 20 %)")
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
    ap.add_argument("--size-gib", type=float, default=1.0, help="image size (default 1)")
    ap.add_argument("--data-fraction", type=float, default=0.25, help="data share of the sparse image")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/work/scratch/bench", help="images + target (needs ~4x size)")
    ap.add_argument("--target", choices=["loop", "file"], default="loop")
    ap.add_argument("--cache", choices=["warm", "cold"], default="warm", help="source image in page cache?")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma list of " + ",".join(TOOLS))
    ap.add_argument("--images", default="dense,sparse", help="comma list of dense,sparse")
    ap.add_argument("--target-dir", help="where the target file goes (default: workdir; /dev/shm = no disk)")
    ap.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each run, hash the target's mapped ranges against the bmap and report its holes (default on)",
    )
    ap.add_argument("--writer-args", type=json.loads, default={}, help="JSON object of extra module parameters")
    ap.add_argument("--module", type=Path, default=MODULE, help="writer module to run (another checkout's, to compare)")
    opts = ap.parse_args()
    opts.tools = [t for t in opts.tools.split(",") if t]
    opts.images = [i for i in opts.images.split(",") if i]
    if set(opts.images) - {"dense", "sparse"}:
        ap.error("--images takes dense and/or sparse")
    unknown = set(opts.tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {sorted(unknown)}")
    needed = {"bmaptool": "bmaptool" in opts.tools, "curl": "dd" in opts.tools}
    for tool in (t for t, wanted in needed.items() if wanted and not shutil.which(t)):
        ap.error(f"{tool} not found (scripts/install-lab-deps.sh installs bmap-tools and curl)")
    print(f"uptime before: {uptime()}", flush=True)
    runs = bench(opts)
    report(runs, int(opts.size_gib * GiB) // MiB * MiB, opts)
    print(f"\nuptime after: {uptime()}")


if __name__ == "__main__":
    main()
