"""The image writer on a lab VM's virtual disk, through the whole job, against `curl | dd` on the
same VM, the same image and the same target (the RAID1 array the pipeline built).

Run inside the lab namespace with the lab up (DESTRUCTIVE for the VM's data disks):
    vagrant/lab exec -- .venv/bin/python bench/bench_writer_vm.py [--host lab1] [--image FILE.raw]
Default image: the sample root filesystem from images/build-sample.sh (built if not cached).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import lab_known_hosts  # noqa: E402
from tests.integration.procs import Api, Service, admin_token, free_port, operator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATE = Path("/run/provisioner-lab")
SSH = ["ssh", *lab_known_hosts.OPTS, "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]


def sample_image() -> Path:
    found = sorted(Path("/var/cache/provisioner-images").glob("*/*/*.raw"))
    if not found:
        subprocess.run(["bash", str(ROOT / "images/build-sample.sh")], check=True)
        found = sorted(Path("/var/cache/provisioner-images").glob("*/*/*.raw"))
    return found[-1]


def vm(rec: dict, cmd: str) -> str:
    lab_known_hosts.ensure(rec)
    return subprocess.run([*SSH, "-i", rec["private_key"], "-p", str(rec["port"]), f"{rec['user']}@{rec['address']}",
                           cmd],
                          capture_output=True, text=True, check=True, timeout=1800).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="lab1")
    ap.add_argument("--image", type=Path, default=None)
    args = ap.parse_args()
    image = args.image or sample_image()
    size = image.stat().st_size
    rec = next(h for h in json.loads((STATE / "hosts.json").read_text()) if h["name"] == args.host)
    gateway = json.loads((STATE / "backup.json").read_text())["host"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_BACKUP_STORE": str(STATE / "backup.json"),
               "PROVISIONER_PUBLIC_URL": f"http://{gateway}:{port}"}
        svc = Service(env, tmp / "svc.log", worker=True, host="0.0.0.0", port=port)
        try:
            admin = Api(svc.url, admin_token(env))
            op = operator(admin, svc.url)
            t = admin.post("/v1/tenants", {"name": "img"})
            u = admin.post("/v1/users", {"name": "imager", "role": "imager", "tenant_id": t["id"]})
            imager = Api(svc.url, admin.post(f"/v1/users/{u['id']}/tokens", {})["token"])
            with image.open("rb") as fh:
                r = imager.c.post("/v1/images", params={"name": "bench", "version": "1", "os_name": "debian",
                                                        "os_version": "12", "format": "raw"}, content=fh,
                                  timeout=600)
            assert r.status_code == 201, r.text
            img = r.json()
            host = op.post("/v1/hosts", {"name": rec["name"], "address": rec["address"], "port": rec["port"],
                                         "ssh_user": rec["user"], "ssh_key_path": rec["private_key"], "pool": "lab"})
            admin.wait_job(op.get("/v1/jobs", host_id=host["id"])["items"][0]["id"], timeout=600)
            canary = imager.post(f"/v1/images/{img['id']}/canary", {"pool": "lab"})
            job = admin.wait_job(canary["job_id"], timeout=1800)
            assert job["status"] == "succeeded", job
            writer = admin.get(f"/v1/hosts/{host['id']}")["results"]["image"]
            phase_s = job["sli"]["phases_s"]["image"]
            # Baseline on the same VM and target: curl | dd, from a plain HTTP server on the controller.
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image.parent))
            httpd = http.server.ThreadingHTTPServer((gateway, 0), handler)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            url = f"http://{gateway}:{httpd.server_address[1]}/{image.name}"
            out = vm(rec, "s=$(date +%s.%N); curl -sf " + url + " | sudo dd of=/dev/md0 bs=4M iflag=fullblock "
                     "oflag=direct conv=fsync status=none; e=$(date +%s.%N); echo $s $e")
            httpd.shutdown()
            s, e = map(float, out.split())
            dd_s = e - s
            rel = imager.post(f"/v1/requests/{canary['request_id']}/release")
            admin.wait_job(max(rel["job_ids"]), timeout=900)
        finally:
            svc.stop()
    ours = writer["timings"]["total"]
    mb = size / 1e6
    print(f"\nimage {image.name}: {size / 2**20:.0f} MiB raw, {img['data_bytes'] / 2**20:.0f} MiB of data, "
          f"target /dev/md0 (RAID1) on {rec['name']} (QEMU TCG)")
    print(f"ours (writer module, verify on)  {ours:7.1f} s  {mb / ours:7.1f} MB/s  mode {writer['mode']}, "
          f"timings {json.dumps(writer['timings'])}")
    print(f"image phase through the job      {phase_s:7.1f} s (ansible + writer)")
    print(f"curl | dd bs=4M conv=fsync       {dd_s:7.1f} s  {mb / dd_s:7.1f} MB/s")
    print(f"ratio dd / ours: {dd_s / ours:.2f}x (writer), {dd_s / phase_s:.2f}x (whole phase)")


if __name__ == "__main__":
    main()
