"""End-to-end: the phase playbooks run directly with ansible-playbook against a lab VM.

Sequence commission -> wipe -> raid -> firewall -> backup -> restore-verify -> handover -> release,
each phase run twice (the second run must succeed again; phases that converge must report
changed=0), checked from outside over SSH after each phase. Runs inside the lab network namespace
(`vagrant/lab exec --`) against PROVISIONER_E2E_HOST (default lab2); skipped when
`vagrant/lab status` fails. DESTRUCTIVE for the lab VM's data disks /dev/vdb and /dev/vdc.

Timings of every run are printed at the end (pytest -s) and, when PROVISIONER_E2E_TIMINGS names a
file, written there as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.direct_lab import ANSIBLE_PLAYBOOK, DATA_DISKS, LAB, PLAYBOOKS, PlaybookHost, lab_host_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HOST = os.environ.get("PROVISIONER_E2E_HOST", os.environ.get("PROVISIONER_E2E_SERVICE_HOST", "lab2"))

TIMINGS: list[dict] = []


class Lab(PlaybookHost):
    def play(self, phase: str, run: int, extra: dict | None = None) -> dict:
        result, out, seconds = self.run(phase, f"{phase}-{run}", extra)
        recap = re.search(r"target\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
        assert recap, out[-3000:]
        changed = int(recap.group(2))
        TIMINGS.append({"phase": phase, "run": run, "seconds": seconds, "changed": changed})
        return {"result": result, "changed": changed, "seconds": seconds, "output": out}

    def twice(self, phase: str, idempotent: bool = True) -> tuple[dict, dict]:
        first = self.play(phase, 1)
        second = self.play(phase, 2)
        if idempotent:
            assert second["changed"] == 0, f"{phase} re-run changed something:\n{second['output'][-4000:]}"
        return first, second

    # -- looking from outside (ssh: PlaybookHost) ------------------------------------------
    def tcp_probe(self, port: int) -> str:
        """open | refused | timeout for a TCP connect from the controller side."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout(3)\n"
                "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print('open')\n"
                "except socket.timeout:\n print('timeout')\nexcept OSError:\n print('refused')\n")
        proc = subprocess.run([str(LAB), "exec", "--", "python3", "-c", code, self.host["address"], str(port)],
                              capture_output=True, text=True, timeout=60)
        return proc.stdout.strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    host, backup = lab_host_or_skip(HOST)
    lab = Lab(host, backup, tmp_path_factory.mktemp("playbooks-e2e"), HOST)
    yield lab
    lab.remove_repository()
    print(f"\nplaybook timings ({HOST}):")
    for t in TIMINGS:
        print(f"  {t['phase']:<15} run {t['run']}  {t['seconds']:6.1f} s  changed={t['changed']}")
    if os.environ.get("PROVISIONER_E2E_TIMINGS"):
        Path(os.environ["PROVISIONER_E2E_TIMINGS"]).write_text(json.dumps(TIMINGS, indent=1))


def test_commission(lab: Lab):
    # discovery (no data disks given) must find exactly the non-root disks
    first = lab.play("commission", 1, extra={"provisioner_data_disks": []})
    second = lab.play("commission", 2)
    assert second["changed"] == 0
    facts = first["result"]["commission"]["facts"]
    assert facts["cpus"] >= 1 and facts["memory_mb"] > 0
    assert facts["root_disk"] == "/dev/vda"
    names = {d["name"] for d in facts["disks"]}
    assert set(DATA_DISKS) <= names
    assert all({"size_bytes", "serial", "rotational", "model"} <= set(d) for d in facts["disks"])
    assert facts["nics"] and any(lab.host["address"] in " ".join(n["addresses"]) for n in facts["nics"])
    assert facts["os"]["id"] == "debian" and facts["os"]["version"].startswith("12")
    assert first["result"]["commission"]["data_disks"] == DATA_DISKS


def test_wipe(lab: Lab):
    first, second = lab.twice("wipe")
    assert first["result"]["wipe"]["disks"] == DATA_DISKS
    assert all(d["was_blank"] for d in second["result"]["wipe"]["details"])
    proc = lab.ssh("sudo mdadm --examine /dev/vdb /dev/vdc", check=False)
    assert proc.returncode != 0 and "No md superblock" in proc.stderr
    assert lab.ssh("sudo wipefs --noheadings /dev/vdb /dev/vdc").stdout.strip() == ""


def test_raid(lab: Lab):
    first, second = lab.twice("raid")
    raid = second["result"]["raid"]
    assert raid["device"] == "/dev/md0" and raid["level"] == "1" and raid["members"] == DATA_DISKS
    assert raid["action"] == "present" and raid["members_up"] == "UU"
    assert raid["state"] == "clean" or raid["state"].startswith("resync")
    mdstat = lab.ssh("cat /proc/mdstat").stdout
    assert re.search(r"md0 : active raid1 .*\n.*\[2/2\] \[UU\]", mdstat), mdstat
    assert "ARRAY /dev/md0" in lab.ssh("cat /etc/mdadm/mdadm.conf").stdout


def test_raid_level_needs_more_disks(lab: Lab):
    cmd = [str(LAB), "exec", "--", str(ANSIBLE_PLAYBOOK), "-i", str(lab.inventory), str(PLAYBOOKS / "raid.yml"),
           "-e", f"@{lab.varsfile}", "-e", '{"provisioner_raid_level": "6"}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_NOCOLOR="1"))
    assert proc.returncode != 0
    assert "RAID6 needs at least 4 disks, got 2" in proc.stdout + proc.stderr


def test_wipe_existing_array(lab: Lab):
    # wipe on disks that carry a running array (re-provisioning a host), then build it again
    wiped = lab.play("wipe", 3)
    w = wiped["result"]["wipe"]
    assert wiped["changed"] >= 1
    assert [a["device"] for a in w["stopped_arrays"]] == ["/dev/md0"]
    proc = lab.ssh("sudo mdadm --examine /dev/vdb /dev/vdc", check=False)
    assert proc.returncode != 0 and proc.stderr.count("No md superblock") == 2, proc.stderr
    assert "md0" not in lab.ssh("cat /proc/mdstat").stdout
    again = lab.play("raid", 3)
    assert again["result"]["raid"]["action"] == "created"
    assert re.search(r"\[2/2\] \[UU\]", lab.ssh("cat /proc/mdstat").stdout)


def test_firewall(lab: Lab):
    first, second = lab.twice("firewall")
    fw = second["result"]["firewall"]
    assert fw["policy"] == "drop"
    assert {(p["port"], p["proto"]) for p in fw["open_ports"]} == {(8080, "tcp"), (443, "tcp")}
    assert fw["mgmt_cidrs"]
    ruleset = json.loads(lab.ssh("sudo nft -j list ruleset").stdout)["nftables"]
    chains = [o["chain"] for o in ruleset if "chain" in o]
    assert any(c["table"] == "filter" and c["name"] == "input" and c.get("policy") == "drop" for c in chains)
    text = lab.ssh("sudo nft list ruleset").stdout
    assert re.search(r"saddr .*tcp dport 22 accept", text), text
    assert lab.ssh("sudo systemctl is-enabled nftables.service").stdout.strip() == "enabled"
    assert lab.ssh("sudo systemctl is-active prov-nft-rollback.timer", check=False).stdout.strip() != "active"
    assert lab.tcp_probe(22) == "open"
    assert lab.tcp_probe(9) == "timeout"  # dropped, not rejected


def test_backup(lab: Lab):
    first, second = lab.twice("backup", idempotent=False)  # every run takes a new snapshot
    assert first["changed"] >= 1 and second["changed"] == 1  # only the backup run itself on re-run
    bk = second["result"]["backup"]
    assert bk["snapshot_id"] and bk["snapshot_id"] != first["result"]["backup"]["snapshot_id"]
    assert bk["timer"] == "provisioner-backup.timer" and "/etc" in bk["paths"]
    assert bk["repository"] == lab.extravars["provisioner_backup"]["repository"]
    assert lab.ssh("sudo systemctl is-enabled provisioner-backup.timer").stdout.strip() == "enabled"
    modes = lab.ssh("sudo stat -c '%a %U %n' /etc/provisioner/backup/id_backup /etc/provisioner/backup/password")
    assert all(line.startswith("600 root") for line in modes.stdout.splitlines()), modes.stdout
    snaps = lab.ssh("sudo /usr/local/sbin/provisioner-restic snapshots --json --tag provisioner")
    assert bk["snapshot_id"] in {s["short_id"] for s in json.loads(snaps.stdout)}


def test_backup_applies_the_request_block(lab: Lab):
    """What the service sends for a request's backup block (services/phase_inputs.backup_inputs) is what
    the host runs, and the compliance check reads the same values back."""
    block = {"paths": ["/etc"], "retention_days": 21, "schedule": "*-*-* 00/6:00:00"}  # "6h" as planned
    extra = {"provisioner_backup": dict(lab.extravars["provisioner_backup"], **block)}
    run = lab.play("backup", 3, extra)
    bk = run["result"]["backup"]
    assert bk["retention_days"] == 21 and bk["schedule"] == block["schedule"] and bk["paths"] == ["/etc"]
    conf = json.loads(lab.ssh("sudo cat /etc/provisioner/backup/backup.json").stdout)
    assert conf["paths"] == ["/etc"] and conf["retention_days"] == 21
    timer = lab.ssh("sudo systemctl show -p TimersCalendar --value provisioner-backup.timer").stdout
    assert "00/6:00:00" in timer, timer
    report = lab.play("compliance", 1, dict(extra, prov_compliance_restore=False))["result"]["compliance"]
    assert report["backup"]["config"] == block, report["backup"]


def test_restore_verify(lab: Lab):
    first, second = lab.twice("restore-verify", idempotent=False)  # a new marker/snapshot each run
    for run in (first, second):
        rv = run["result"]["restore_verify"]
        assert rv["passed"] is True and rv["files"] >= 1 and rv["snapshot_id"] and rv["checksum"]
    on_host = json.loads(lab.ssh("cat /var/lib/provisioner/restore-test.json").stdout)
    assert on_host["passed"] is True
    assert on_host["snapshot_id"] == second["result"]["restore_verify"]["snapshot_id"]
    assert lab.ssh("ls /var/tmp | grep -c prov-restore- || true").stdout.strip() == "0"


def test_handover(lab: Lab):
    first, second = lab.twice("handover")
    assert second["result"]["handover"]["user"] == "customer"
    proc = lab.ssh("id -un && sudo -n true && echo sudo-ok", user="customer", key=str(lab.customer_key))
    assert proc.stdout.split() == ["customer", "sudo-ok"]


def test_release(lab: Lab):
    # the customer mounted the array somewhere: release must cope
    lab.ssh("sudo mkfs.ext4 -q -F /dev/md0 && sudo mkdir -p /mnt/e2e && sudo mount /dev/md0 /mnt/e2e",
            user="customer", key=str(lab.customer_key))
    # Not converging by design: every release erases the whole disks again (data needs no signature).
    first, second = lab.twice("release", idempotent=False)
    rel = first["result"]["release"]
    assert all(d["erase"]["method"] for d in second["result"]["release"]["details"])
    assert rel["wiped"] == DATA_DISKS
    assert {"device": "/dev/md0", "mountpoint": "/mnt/e2e"} in rel["unmounted"]
    assert rel["firewall"]["policy"] == "drop" and rel["firewall"]["open_ports"] == []
    proc = lab.ssh("sudo mdadm --examine /dev/vdb /dev/vdc", check=False)
    assert proc.returncode != 0 and proc.stderr.count("No md superblock") == 2, proc.stderr
    assert "md0" not in lab.ssh("cat /proc/mdstat").stdout
    assert lab.ssh("id customer", check=False).returncode != 0
    assert lab.ssh("customer-login", user="customer", key=str(lab.customer_key), check=False).returncode == 255
    assert lab.ssh("sudo systemctl is-enabled provisioner-backup.timer", check=False).stdout.strip() != "enabled"
    assert lab.ssh("sudo test -e /etc/provisioner/backup", check=False).returncode != 0
    assert lab.tcp_probe(443) == "timeout"
    assert lab.tcp_probe(22) == "open"
