"""Install time of one host through the service, per phase, on a lab VM, against the same playbooks
run by bare `ansible-playbook` on the same VM in the same run: the ratio is the service overhead.

Run inside the lab namespace with the lab up:
    vagrant/lab up && vagrant/lab exec -- .venv/bin/python bench/bench_install.py [--host lab1]
DESTRUCTIVE for the VM's data disks. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bare_playbook  # noqa: E402  (beside this script)

from tests.e2e import lab_known_hosts  # noqa: E402
from tests.integration.procs import Api, Service, admin_token, customer, operator  # noqa: E402
from workers.inventory import extravars_for, inventory_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATE = Path("/run/provisioner-lab")
PHASES = ["wipe", "raid", "firewall", "backup", "restore-verify", "handover"]


def bare_run(rec: dict, hw: dict, pub: str, tmp: Path) -> dict[str, float]:
    backup = bare_playbook.lab_backup(f"bare-{rec['name']}")
    host = {"name": rec["name"], "connection": "ssh", "address": rec["address"], "port": rec["port"],
            "ssh_user": rec["user"], "hardware": hw, "labels": {}}
    inv = tmp / "inv.json"
    host["host_key"] = lab_known_hosts.ensure(rec)
    inv.write_text(json.dumps(inventory_for(host, rec["private_key"], str(lab_known_hosts.PATH))))
    ev = tmp / "ev.json"
    ev.write_text(json.dumps(extravars_for({"id": 0, "kind": "provision"}, host,
                                           {"ssh_public_key": pub, "raid_level": "1"}, backup)))
    out = {}
    for ph in [*PHASES, "release"]:
        t0 = time.perf_counter()
        bare_playbook.run(ROOT / "playbooks" / f"{ph}.yml", inv, ev)
        out[ph] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="lab1")
    args = ap.parse_args()
    rec = next(h for h in json.loads((STATE / "hosts.json").read_text()) if h["name"] == args.host)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "k")], check=True)
        pub = (tmp / "k.pub").read_text().strip()
        env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_BACKUP_STORE": str(STATE / "backup.json")}
        svc = Service(env, tmp / "svc.log", worker=True)
        try:
            admin = Api(svc.url, admin_token(env))
            op, cust = operator(admin, svc.url), customer(admin, svc.url)
            host = op.post("/v1/hosts", {"name": rec["name"], "address": rec["address"], "port": rec["port"],
                                         "ssh_user": rec["user"], "ssh_key_path": rec["private_key"]})
            cjob = op.get("/v1/jobs", host_id=host["id"])["items"][0]
            admin.wait_job(cjob["id"], timeout=600)
            hw = op.get(f"/v1/hosts/{host['id']}")["hardware"]
            req = cust.post("/v1/requests", {"ssh_public_key": pub})
            job = admin.wait_job(req["job_ids"][0], timeout=1800)
            assert job["status"] == "succeeded", job
            rel = cust.post(f"/v1/requests/{req['id']}/release")
            rjob = admin.wait_job(max(rel["job_ids"]), timeout=900)
            assert rjob["status"] == "succeeded", rjob
        finally:
            svc.stop()
        bare = bare_run(rec, hw, pub, tmp)
    svc_phases = job["sli"]["phases_s"] | {"release": rjob["sli"]["phases_s"]["release"]}
    print(f"\n{'phase':16s} {'service s':>10s} {'bare s':>8s}")
    for ph in [*PHASES, "release"]:
        print(f"{ph:16s} {svc_phases[ph]:10.1f} {bare[ph]:8.1f}")
    svc_total = job["sli"]["total_s"]
    bare_total = sum(bare[p] for p in PHASES)
    print(f"\ninstall (request accepted -> host ready), all phases: service {svc_total:.1f}s, "
          f"bare ansible-playbook {bare_total:.1f}s, ratio {svc_total / bare_total:.3f} (goal <= 1.05; "
          f"goal <= 180 s for all phases excluding VM boot)")
    sli = job["sli"]
    print(f"queue wait {sli['queue_wait_s']}s, engine overhead outside playbooks {sli['engine_overhead_s']}s")


if __name__ == "__main__":
    main()
