"""The image writer in the deploy ramdisk, onto a bare-metal lab VM's root disk, against
``curl | dd bs=4M oflag=direct`` and ``bmaptool copy`` onto the same disk, same images, in one run.

The VM is booted into the deploy ramdisk through its BMC as a deploy does (the per-job ISO with the
job's login key and the ramdisk's host key, pinned), then every contender runs in the ramdisk from one
shell and is timed there, so SSH costs none of them anything:

* Same start. Before each contender the image's span of the root disk is overwritten with random
  bytes (streamed from this machine, unlike either image) and flushed: a range a tool skips reads
  back as junk.
* Same source. bench/bench_writer.py's HTTP server (sendfile, Range, the token in the Authorization
  header, Basic with the same token for bmaptool), here on the lab network's gateway; its images
  (dense: random bytes; sparse: a quarter of it data in fs-like extents) and their bmaps.
* Same durability. dd writes with O_DIRECT and ``conv=fsync``, ours with O_DIRECT and fsync,
  bmaptool fsyncs; then ``blockdev --flushbufs`` (fsync + drop the page cache) inside the clock.
* Checked (``--no-check`` to skip): after each contender the ramdisk hashes the disk's mapped ranges
  against the bmap; dd and ours must also leave the holes reading as zeros.

Our writer runs as the image phase runs it, minus Ansible's transport: the module and its
module_utils, with Ansible's module_utils (what AnsiballZ would ship), copied into the ramdisk's RAM
and run by its python3. bmaptool is not in the ramdisk: it is copied the same way from this
machine's bmap-tools package (Debian 12's python3 on both sides).

Under QEMU TCG the VM's CPU is emulated: hashing and every copy cost several times what they cost on
hardware, so the ratios here are those of a CPU-starved machine.

Run inside the lab namespace with the lab up and one bare-metal VM, after building the ramdisk
(outside the namespace: debootstrap needs the mirror):
    images/build-ramdisk.sh
    vagrant/lab up --hosts 1 --bare-metal 1
    vagrant/lab exec -- .venv/bin/python bench/bench_writer_ramdisk.py [--host bm1] [--size-mib 512]
DESTRUCTIVE for the VM's root disk. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import ansible  # type: ignore[import-untyped]  # noqa: E402
from bench_deploy import STATE, Curl, build_dir, http_dir, wait_key  # noqa: E402
from bench_writer import (  # noqa: E402
    MODULE,
    TOKEN,
    MiB,
    Run,
    make_images,
    make_old_data,
    prepare_cache,
    prepare_sidecars,
    report,
    start_server,
    uptime,
)

from provisioner.core.host_keys import known_hosts_line  # noqa: E402
from provisioner.imaging.bmap import data_bytes  # noqa: E402
from provisioner.imaging.boot_iso import write_boot_iso_file  # noqa: E402
from provisioner.services import deploy  # noqa: E402
from provisioner.services.host_key_gen import new_host_key  # noqa: E402
from provisioner.store.models import Host  # noqa: E402

TOOLS = ["dd", "bmaptool", "ours", "ours-noverify"]
REMOTE = "/run/bench"  # the ramdisk's root is RAM: so is this

# Runs in the ramdisk after each contender: the mapped ranges against the bmap, and what the holes
# read as (zeros, or "junk": anything else).
CHECK = r"""
import hashlib, json, sys
bmap = json.load(open(sys.argv[1])); dev = sys.argv[2]
ok, holes, pos = True, set(), 0
with open(dev, "rb", buffering=0) as f:
    for r in bmap["ranges"] + [{"start": bmap["image_size"], "end": bmap["image_size"], "sha256": None}]:
        while pos < r["start"]:
            n = min(r["start"] - pos, 16 << 20); f.seek(pos)
            holes.add("zeros" if f.read(n) == bytes(n) else "junk"); pos += n
        if r["sha256"] is None:
            break
        h = hashlib.sha256(); f.seek(r["start"]); left = r["end"] - r["start"]
        while left:
            chunk = f.read(min(left, 16 << 20)); h.update(chunk); left -= len(chunk)
        ok = ok and h.hexdigest() == r["sha256"]; pos = r["end"]
print(json.dumps({"ok": ok, "holes": ",".join(sorted(holes)) or "none"}))
"""


def tools_tar() -> bytes:
    """Our module with its module_utils, Ansible's module_utils, bmaptool with six: one tar."""
    buf = io.BytesIO()
    site = Path(ansible.__file__).parent
    dist = Path("/usr/lib/python3/dist-packages")

    def no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if "__pycache__" in info.name else info

    # dereference: prov_bmap is a symlink into provisioner/core
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for name in ("__init__.py", "release.py", "_vendor", "module_utils"):
            tar.add(site / name, f"py/ansible/{name}", filter=no_cache)
        tar.add(dist / "bmaptools", "py/bmaptools", filter=no_cache)
        tar.add(dist / "six.py", "py/six.py")
        tar.add("/usr/bin/bmaptool", "bin/bmaptool")
        playbooks = MODULE.parents[1]
        tar.add(playbooks / "library", "pb/library", filter=no_cache)
        tar.add(playbooks / "module_utils", "pb/module_utils", filter=no_cache)
    return buf.getvalue()


class Ramdisk:
    """Commands in the ramdisk over one pinned SSH connection."""

    def __init__(self, address: str, key: Path, known_hosts: Path, tmp: Path) -> None:
        self.ssh = ["ssh", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ControlPath={tmp}/cm",
                    "-o", "ControlMaster=auto", "-o", "ControlPersist=1800", "-i", str(key), f"root@{address}"]

    def __call__(self, script: str, data: bytes | None = None, timeout: float = 1800) -> str:
        out = subprocess.run([*self.ssh, f"bash -o pipefail -ec {shlex.quote(script)}"], input=data,
                             capture_output=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"in the ramdisk: {script[:200]!r} exited {out.returncode}: "
                               f"{out.stderr.decode(errors='replace')[-1500:]}")
        return out.stdout.decode(errors="replace")

    def put(self, path: str, data: bytes) -> None:
        self(f"cat > {shlex.quote(path)}", data)


def root_disk(vm: Ramdisk, need: int) -> str:
    """The largest disk: the bare-metal VMs' root disk (the data disks are smaller)."""
    disks = []
    for line in vm("lsblk -dbnpo NAME,SIZE,TYPE").splitlines():
        dev, length, kind = line.split()
        if kind == "disk":
            disks.append((int(length), dev))
    size, name = max(disks)
    if size < need:
        raise SystemExit(f"the root disk {name} ({size} bytes) is smaller than the image span ({need} bytes)")
    return name


def timed(vm: Ramdisk, cmd: str, dev: str) -> tuple[float, float]:
    """Runs ``cmd`` in the ramdisk, flushes the disk; -> (wall seconds, CPU seconds of cmd's processes)."""
    out = vm(f"s=$(date +%s.%N); {cmd}; blockdev --flushbufs {dev}; e=$(date +%s.%N); echo TIME $s $e; times")
    lines = out.splitlines()
    start, end = (float(x) for x in next(line for line in lines if line.startswith("TIME ")).split()[1:3])
    children = lines[-1].split()  # `times`: the shell's own line, then its children's: "0m1.234s 0m0.567s"
    cpu = sum(int(t.split("m")[0]) * 60 + float(t.split("m")[1].rstrip("s")) for t in children)
    return end - start, cpu


def boot_ramdisk(rec: dict[str, Any], tmp: Path, gateway: str, stack: ExitStack) -> tuple[Ramdisk, Curl]:
    """Powers the VM off, boots the deploy ramdisk from its BMC's CD; -> the ramdisk and the BMC. The
    server holding the ISO stays up with ``stack`` (the ramdisk may read the CD)."""
    host = Host(id=1, name=rec["name"], address=rec["address"], driver="redfish", hardware={}, labels={})
    keys = deploy.DeployKeys(new_host_key("ramdisk"), new_host_key("login"), new_host_key("os"))
    login = tmp / "login"
    login.write_bytes(keys.ramdisk_login_key.private)
    login.chmod(0o600)
    kh = tmp / "known_hosts"
    kh.write_text(known_hosts_line(rec["address"], 22, keys.ramdisk_host_key.public))
    media = tmp / "media"
    media.mkdir()
    write_boot_iso_file(build_dir("build-ramdisk.sh") / "deploy-ramdisk.iso", deploy.ramdisk_files(host, keys),
                        media / "boot.iso")
    iso_url = stack.enter_context(http_dir(media, gateway))
    bmc = Curl(rec, tmp)
    bmc.boot_from_cd(f"{iso_url}/boot.iso")
    print("booting the deploy ramdisk ...", flush=True)
    wait_key(rec["address"], keys.ramdisk_host_key.public)
    return Ramdisk(rec["address"], login, kh, tmp), bmc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="bm1")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--data-fraction", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--images", default="dense,sparse")
    ap.add_argument("--workdir", default="/work/scratch/bench-ramdisk")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    opts = ap.parse_args()
    opts.tools = [t for t in opts.tools.split(",") if t]
    opts.images = [i for i in opts.images.split(",") if i]
    if set(opts.tools) - set(TOOLS) or set(opts.images) - {"dense", "sparse"}:
        ap.error(f"--tools takes {','.join(TOOLS)}; --images takes dense,sparse")
    rec = next(h for h in json.loads((STATE / "bmc.json").read_text()) if h["name"] == opts.host)
    gateway = json.loads((STATE / "backup.json").read_text())["host"]
    size = opts.size_mib * MiB
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    images = make_images(workdir, size, opts.data_fraction, opts.images)
    old = make_old_data(workdir, size)
    sidecars = {name: prepare_sidecars(path) for name, path in images.items()}
    files = {f"/{p.name}": p for p in [*images.values(), old]}
    srv, base = start_server(files, bind=gateway)
    print(f"uptime before: {uptime()}", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        stack.callback(srv.shutdown)
        vm, bmc = boot_ramdisk(rec, tmp, gateway, stack)
        stack.callback(bmc.reset, "ForceOff")  # runs first: the VM is off before its ISO goes
        vm(f"rm -rf {REMOTE} && mkdir -p {REMOTE} && tar -C {REMOTE} -xf -", tools_tar())
        vm.put(f"{REMOTE}/check.py", CHECK.encode())
        dev = root_disk(vm, size)
        kernel = vm("uname -r").strip()
        cpus = vm("nproc").strip()
        print(f"root disk {dev}, ramdisk kernel {kernel}, {cpus} vCPU(s) (QEMU TCG)", flush=True)
        py = f"PYTHONPATH={REMOTE}/py python3"
        for name, image in images.items():
            bmap, bmap_xml, _ = sidecars[name]
            vm.put(f"{REMOTE}/{name}.bmap.json", json.dumps(bmap).encode())
            vm.put(f"{REMOTE}/{name}.bmap", bmap_xml.read_bytes())
            for verify in (True, False):
                args = {"url": f"{base}/{image.name}", "token": TOKEN, "bmap": bmap, "sha256": bmap["sha256"],
                        "target": dev, "compression": "none", "verify": verify}
                vm.put(f"{REMOTE}/{name}-{verify}.json", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
            print(f"\n{name}: {size / MiB:.0f} MiB, data {data_bytes(bmap) / MiB:.0f} MiB, "
                  f"{len(bmap['ranges'])} ranges", flush=True)
            url = f"{base}/{image.name}"
            commands = {
                "dd": f"curl -sfS -H 'Authorization: Bearer {TOKEN}' '{url}' "
                      f"| dd of={dev} bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc status=none",
                "bmaptool": f"{py} {REMOTE}/bin/bmaptool -q copy --bmap {REMOTE}/{name}.bmap "
                            f"'{url.replace('http://', f'http://bench:{TOKEN}@')}' {dev}",
                "ours": f"{py} {REMOTE}/pb/library/provisioner_image_write.py {REMOTE}/{name}-True.json "
                        f"> {REMOTE}/out.json",
                "ours-noverify": f"{py} {REMOTE}/pb/library/provisioner_image_write.py "
                                 f"{REMOTE}/{name}-False.json > {REMOTE}/out.json",
            }
            for rep in range(opts.repeat):
                for tool in opts.tools:
                    vm(f"curl -sfS -H 'Authorization: Bearer {TOKEN}' '{base}/{old.name}' | dd of={dev} bs=4M "
                       f"iflag=fullblock oflag=direct conv=fsync,notrunc status=none; blockdev --flushbufs {dev}")
                    prepare_cache("warm", image)
                    detail: dict[str, Any] = {}
                    try:
                        seconds, cpu = timed(vm, commands[tool], dev)
                        detail["cpu_s"] = cpu
                        if tool.startswith("ours"):
                            detail.update(json.loads(vm(f"cat {REMOTE}/out.json").strip().splitlines()[-1]))
                    except RuntimeError as exc:
                        seconds, detail = float("nan"), {"failed": True, "msg": str(exc), "cpu_s": 0.0}
                    ok, holes = not detail.get("failed"), "-"
                    if ok and opts.check:
                        got = json.loads(vm(f"python3 {REMOTE}/check.py {REMOTE}/{name}.bmap.json {dev}"))
                        ok, holes = got["ok"], got["holes"]
                        if tool != "bmaptool" and holes not in ("zeros", "none"):
                            ok = False  # dd and ours promise the whole image, holes included
                    runs.append(Run(name, tool, seconds, ok, holes, detail))
                    flag = "" if ok else f"  FAILED {detail.get('msg', 'content mismatch')}"
                    print(f"  [{rep + 1}/{opts.repeat}] {tool:14s} {seconds:7.2f}s {size / 1e6 / seconds:8.0f} "
                          f"MB/s cpu {detail['cpu_s']:5.2f}s holes={holes}{flag}", flush=True)
    report(runs, size, opts, setting=(
        f"target: {rec['name']}'s root disk {dev} in the deploy ramdisk (kernel {kernel}, {cpus} vCPU under QEMU "
        f"TCG), the image's span refilled with random bytes before each run; source: HTTP from {gateway} "
        f"(this machine), cache warm"))
    print(f"\nuptime after: {uptime()}")


if __name__ == "__main__":
    main()
