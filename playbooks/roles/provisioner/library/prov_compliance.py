#!/usr/bin/python
"""Continuous compliance: re-check the guardrails (RAID, firewall, backup/restore) and report drift."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_compliance
short_description: Report RAID health, firewall drift, restore test and repository check (read-only)
description:
  - Never repairs anything and never fails because of drift - every finding goes into the result.
    It fails only on invalid arguments (e.g. backup_repository without password/key).
  - RAID - I(raid_device), or the array found over I(data_disks) (or over the data disks found like
    prov_probe does when I(data_disks) is empty); state clean | resync N% | degraded | inactive | missing.
  - Firewall - table inet filter, chain input policy, the live signature compared with the one the
    firewall phase saved in I(nft_state) (same algorithm as prov_nftables), /etc/nftables.conf
    compared with the saved file hash, nftables.service enabled; open ports computed like prov_nftables.
  - Backup - with I(backup_repository) the credentials are written to a private temporary directory
    under /run (removed afterwards; nothing of the host's backup setup is touched), otherwise the host's
    provisioner-restic wrapper is used. Restore test as in prov_restore_verify (marker files -> backup ->
    restore into scratch -> sha256) and C(restic check) (optionally --read-data-subset).
  - Writes the report to I(result_path).
options:
  raid_device:
    description: Expected md device.
    type: str
    default: /dev/md0
  raid_level:
    description: Expected RAID level; empty = any.
    type: str
    default: ""
  data_disks:
    description: Data disks; empty = found like prov_probe does.
    type: list
    elements: str
    default: []
  ssh_port:
    description: The host's sshd port.
    type: int
    default: 22
  nft_state:
    description: State file the firewall phase saved (signature, file hash).
    type: str
    default: /var/lib/provisioner/nftables.state.json
  nft_conf:
    description: The nftables configuration file.
    type: str
    default: /etc/nftables.conf
  backup_repository:
    description: restic repository (sftp:user@host:/path) to test with the credentials below; empty = use
      the host's provisioner-restic wrapper.
    type: str
    default: ""
  backup_port:
    description: SFTP port of the repository.
    type: int
    default: 22
  backup_user:
    description: SFTP user when the repository URL has none.
    type: str
    default: ""
  backup_password:
    description: Repository password (secret).
    type: str
    default: ""
  backup_sftp_private_key:
    description: SFTP private key, OpenSSH/PEM text (secret).
    type: str
    default: ""
  backup_host_key:
    description: Repository host key(s) to pin (string or list); empty = trust on first use.
    type: raw
    default: ""
  host:
    description: restic --host; empty = the machine's hostname.
    type: str
    default: ""
  job_id:
    description: Job id (scratch directory name, report).
    type: str
    default: manual
  restore:
    description: "Run the restore test; false = report C(restore: {})."
    type: bool
    default: true
  restore_files:
    description: Number of marker files for the restore test.
    type: int
    default: 3
  restore_size_kib:
    description: Size of each marker file in KiB.
    type: int
    default: 256
  marker_dir:
    description: Directory for the marker files.
    type: str
    default: /srv/data/.provisioner-restore-test
  check_repository:
    description: Run C(restic check).
    type: bool
    default: true
  read_data_subset:
    description: restic check --read-data-subset value (e.g. "5%"); empty = structure only.
    type: str
    default: ""
  lock_wait_seconds:
    description: How long to wait for a repository lock held by a running backup.
    type: int
    default: 120
  check_timeout_seconds:
    description: Timeout of each restic check.
    type: int
    default: 300
  restic:
    description: The host's restic wrapper.
    type: str
    default: /usr/local/sbin/provisioner-restic
  result_path:
    description: JSON file the report is written to.
    type: str
    default: /var/lib/provisioner/compliance.json
"""

EXAMPLES = r"""
- name: Check RAID, firewall, restore and repository
  prov_compliance:
    raid_device: /dev/md0
    raid_level: "1"
    ssh_port: 22
    read_data_subset: "5%"
  register: prov_comp
"""

RETURN = r"""
compliance:
  description: The report - raid, firewall, backup, backup_configured, restore, repository, data_disks,
    data_disk_count, checked_at, seconds, all_healthy (and result_file_error when the report file
    could not be written).
  returned: success
  type: dict
  contains:
    raid:
      description: RAID state (device, state, level, healthy, members, missing_disks, ...).
      returned: always
      type: dict
    firewall:
      description: Firewall state (default_policy_input, drifted, reasons, open_ports, mgmt_cidrs, ...).
      returned: always
      type: dict
    backup:
      description: Backup setup (installed, timer_enabled, repository, source, last backup, ...) and
        config, what is installed - {paths, retention_days, schedule} from backup.json and the
        timer's OnCalendar, or null when either cannot be read.
      returned: always
      type: dict
    backup_configured:
      description: Wrapper, credentials and enabled timer present.
      returned: always
      type: bool
    restore:
      description: Restore test result; {} when I(restore=false).
      returned: always
      type: dict
    repository:
      description: restic check result (ok, error, skipped).
      returned: always
      type: dict
    all_healthy:
      description: No drift anywhere.
      returned: always
      type: bool
    checked_at:
      description: UTC timestamp (ISO 8601).
      returned: always
      type: str
    seconds:
      description: Duration of the check.
      returned: always
      type: float
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import (
    candidate,
    disk_table,
    lsblk,
    md_arrays,
    mdadm_export,
    mdstat_block,
    parent_disk,
    read,
    resolve_disk_path,
    run,
    write_atomic,
)
from ansible.module_utils.prov_nft import open_ports, summarize
from ansible.module_utils.prov_restore import TAG, compare_restored, make_scratch, safe_job, snapshot_of, write_markers

MGMT_COMMENT = "prov: ssh from management"
BACKUP_DIR = "/etc/provisioner/backup"
CACHE_DIR = "/var/cache/provisioner-restic"


def utc_now():
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(text, lines=8, limit=1500):
    keep = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " | ".join(keep[-lines:])[-limit:]


# ---------------------------------------------------------------- RAID

def md_members(kname):
    """{whole disk: member state} from /sys/block/<md>/md/dev-*/state (in_sync, faulty, spare, ...)."""
    base = "/sys/block/%s/md" % kname
    res = {}
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return res
    for name in names:
        if name.startswith("dev-"):
            res[parent_disk(name[4:])] = read(os.path.join(base, name, "state"), "") or ""
    return res


def raid_report(module, device, want_level, data_disks):
    arrays = md_arrays()
    arr = arrays.get(device)
    if arr is None:
        # e.g. our array auto-assembled as /dev/md127 after a reboot
        arr = next((a for a in arrays.values() if set(a["members"]) & set(data_disks)), None)
    if arr is None:
        return {"device": device, "expected_device": device, "state": "missing", "missing": True, "level": None,
                "md_level": None, "degraded": False, "healthy": False, "members": [], "failed_members": [],
                "spare_members": [], "missing_disks": list(data_disks), "sync_action": None,
                "sync_completed": None, "members_up": None, "array_state": None, "uuid": None,
                "in_mdadm_conf": None, "mdstat": ""}
    dev = arr["device"]
    states = md_members(os.path.basename(dev))
    failed = sorted(d for d, s in states.items() if "faulty" in s)
    working = sorted(d for d, s in states.items() if "in_sync" in s and "faulty" not in s)
    spare = sorted(d for d, s in states.items() if d not in failed and d not in working)
    block = mdstat_block(dev)
    m = re.search(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]", block)
    flags = m.group(3) if m else None
    sync = arr.get("sync_action")
    degraded = bool(arr["degraded"]) or bool(failed) or (flags is not None and "_" in flags)
    if arr["array_state"] in ("inactive", "clear", ""):
        state = "inactive"
    elif degraded:
        state = "degraded"
    elif sync in ("resync", "recover", "reshape"):
        pct = ""
        mm = re.match(r"(\d+)\s*/\s*(\d+)", arr.get("sync_completed") or "")
        if mm and int(mm.group(2)):
            pct = " %.1f%%" % (100.0 * int(mm.group(1)) / int(mm.group(2)))
        state = "%s%s" % (sync, pct)
    else:
        state = "clean"
    level = arr["level"][4:] if arr["level"].startswith("raid") else arr["level"]
    want = str(want_level or "").lower().replace("raid", "")
    info = mdadm_export(module, ["--detail", dev])
    uuid = info.get("MD_UUID")
    conf = read("/etc/mdadm/mdadm.conf", "") or ""
    in_conf = bool(uuid) and uuid.lower() in conf.lower()
    missing_disks = sorted(set(data_disks) - set(working) - set(spare)) if data_disks else []
    healthy = state not in ("inactive", "degraded") and (not want or want == level)
    return {"device": dev, "expected_device": device, "state": state, "missing": False, "level": level,
            "md_level": arr["level"], "level_matches": (want == level) if want else None, "degraded": degraded,
            "healthy": healthy, "members": working, "failed_members": failed, "spare_members": spare,
            "missing_disks": missing_disks, "raid_disks": arr["raid_disks"], "degraded_count": arr["degraded"],
            "sync_action": sync, "sync_completed": arr.get("sync_completed"), "members_up": flags,
            "array_state": arr["array_state"], "uuid": uuid, "in_mdadm_conf": in_conf, "mdstat": block}


# ---------------------------------------------------------------- firewall (same reading as prov_nftables)

# net/summarize: module_utils/prov_nft.py, the reading prov_nftables checks its own work with


def file_sha(path):
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def firewall_report(module, ssh_port, state_path, conf_path):
    res = {"default_policy_input": "missing", "drifted": True, "open_ports": [], "mgmt_cidrs": [],
           "signature_matches": False, "file_matches": None, "service_enabled": None, "reasons": [], "error": None}
    if not shutil.which("nft"):
        res["error"] = "nft is not installed"
        res["reasons"].append(res["error"])
        return res
    rc, out, err = run(module, ["nft", "-j", "list", "ruleset"], check=False)
    try:
        ruleset = json.loads(out or "{}") if rc == 0 else None
    except ValueError:
        ruleset = None
    if ruleset is None:
        res["error"] = "nft -j list ruleset failed (rc=%d): %s" % (rc, tail(err))
        res["reasons"].append(res["error"])
        return res
    chain, rules, live_sig = summarize(ruleset)
    if chain is None:
        res["reasons"].append("table inet filter has no input chain (ruleset flushed?)")
    else:
        res["default_policy_input"] = chain.get("policy") or "missing"
        if res["default_policy_input"] != "drop":
            res["reasons"].append("input policy is %s" % res["default_policy_input"])
    try:
        with open(state_path) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = None
    if not state:
        res["reasons"].append("%s missing: the firewall phase has not run" % state_path)
    else:
        res["signature_matches"] = state.get("live_sig") == live_sig
        if not res["signature_matches"]:
            res["reasons"].append("live ruleset differs from what the firewall phase applied")
        res["file_matches"] = state.get("file_sha") == file_sha(conf_path)
        if not res["file_matches"]:
            res["reasons"].append("%s differs from what the firewall phase wrote" % conf_path)
    rc, out, _ = run(module, ["systemctl", "is-enabled", "nftables.service"], check=False)
    res["service_enabled"] = out.strip() == "enabled"
    if not res["service_enabled"]:
        res["reasons"].append("nftables.service is not enabled (%s)" % (out.strip() or "unknown"))
    mgmt = set()
    for r in rules:
        if r["comment"] == MGMT_COMMENT and r["saddr"]:
            mgmt |= r["saddr"]
    res["open_ports"] = open_ports(rules, ssh_port, mgmt)
    res["mgmt_cidrs"] = sorted(str(n) for n in mgmt)
    res["drifted"] = bool(res["reasons"])
    return res


# ---------------------------------------------------------------- backup / restore

class Restic:
    """restic bound to the repository: either the provisioner_backup credentials (temporary, under /run) or the
    host's provisioner-restic wrapper."""

    def __init__(self, module, p):
        self.module = module
        self.tmp = None
        self.lock_wait = p["lock_wait_seconds"]
        repo = p["backup_repository"].strip()
        if repo:
            self.mode = "prov_backup"
            m = re.match(r"^sftp:(?:([^@/]+)@)?(\[[^\]]+\]|[^:/\[\]]+):(.+)$", repo)
            if not m:
                module.fail_json(msg='provisioner_backup.repository must look like "sftp:user@host:/path"')
            if not p["backup_password"] or not p["backup_sftp_private_key"]:
                module.fail_json(msg="provisioner_backup needs password and sftp_private_key")
            host = m.group(2).strip("[]")
            user = m.group(1) or p["backup_user"] or "root"
            port = p["backup_port"]
            self.tmp = tempfile.mkdtemp(prefix="prov-compliance-", dir="/run" if os.path.isdir("/run") else None)
            os.chmod(self.tmp, 0o700)
            write_atomic(os.path.join(self.tmp, "password"), p["backup_password"], 0o600)
            write_atomic(os.path.join(self.tmp, "id_backup"), p["backup_sftp_private_key"].strip() + "\n", 0o600)
            keys = p["backup_host_key"]
            keys = [k.strip() for k in (keys.splitlines() if isinstance(keys, str) else keys or []) if k.strip()]
            kh = os.path.join(self.tmp, "known_hosts")
            if keys:
                name = host if port == 22 else "[%s]:%d" % (host, port)
                write_atomic(kh, "".join("%s %s\n" % (name, k) for k in keys), 0o600)
                strict = "yes"
            else:  # trust on first use, like the backup phase; start from what it has learnt
                if os.path.isfile(os.path.join(BACKUP_DIR, "known_hosts")):
                    shutil.copy2(os.path.join(BACKUP_DIR, "known_hosts"), kh)
                strict = "accept-new"
            cfg = ("Host provisioner-backup\n    HostName %s\n    Port %d\n    User %s\n    IdentityFile %s\n"
                   "    IdentitiesOnly yes\n    BatchMode yes\n    UserKnownHostsFile %s\n"
                   "    StrictHostKeyChecking %s\n    ConnectTimeout 20\n    ServerAliveInterval 15\n"
                   "    ServerAliveCountMax 4\n") % (host, port, user, os.path.join(self.tmp, "id_backup"), kh, strict)
            write_atomic(os.path.join(self.tmp, "ssh_config"), cfg, 0o600)
            self.base = ["restic", "-o", "sftp.command=ssh -F %s provisioner-backup -s sftp"
                         % os.path.join(self.tmp, "ssh_config")]
            for var in ("RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND"):
                os.environ.pop(var, None)
            self.env = {"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD_FILE": os.path.join(self.tmp, "password"),
                        "RESTIC_CACHE_DIR": CACHE_DIR}
            self.repository = repo
            self.problem = None if shutil.which("restic") else "restic is not installed on the host"
        else:
            self.mode = "host"
            self.base = [p["restic"]]
            self.env = {}
            self.repository = (read(os.path.join(BACKUP_DIR, "repository"), "") or "").strip() or None
            self.problem = None if os.access(p["restic"], os.X_OK) else (
                "backups are not configured on this host (%s missing) and no provisioner_backup was given" % p["restic"])
            if self.problem is None and not shutil.which("restic"):
                self.problem = "restic is not installed on the host"

    def __call__(self, args, timeout=300):
        """rc 124 = killed after `timeout` seconds (restic retries unreadable files for minutes)"""
        deadline = time.time() + self.lock_wait
        limit = ["timeout", "-k", "10", str(timeout)] if timeout and shutil.which("timeout") else []
        while True:
            rc, out, err = self.module.run_command(limit + self.base + args, environ_update=self.env)
            if rc == 124 and limit:
                err = (err.rstrip() + "\ntimed out: restic did not finish within %d s" % timeout).lstrip()
            if rc != 0 and "already locked" in err and time.time() < deadline:
                time.sleep(10)  # the backup timer (or a prune) holds the lock; wait a bounded time
                continue
            return rc, out, err

    def cleanup(self):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Failed(Exception):
    pass


def restore_test(restic, p, host):
    """prov_restore_verify's round trip, reporting instead of failing."""
    job = safe_job(p["job_id"])
    marker = os.path.normpath(p["marker_dir"])
    scratch = None
    started = time.time()
    res = {"passed": False, "error": "", "seconds": None, "verified_at": None, "checksum": None,
           "snapshot_id": None, "files": p["restore_files"], "bytes": p["restore_files"] * p["restore_size_kib"] * 1024}
    try:
        expected, res["checksum"] = write_markers(marker, p["restore_files"], p["restore_size_kib"])
        rc, out, err = restic(["backup", "--json", "--tag", TAG, "--host", host, marker])
        snapshot = snapshot_of(out)
        if rc != 0 or not snapshot:
            raise Failed("restic backup failed (rc=%d): %s" % (rc, tail(err) or "no snapshot id"))
        res["snapshot_id"] = snapshot
        scratch = make_scratch("compliance-%s" % job)
        rc, out, err = restic(["restore", snapshot, "--target", scratch])
        if rc != 0:
            raise Failed("restic restore of %s failed (rc=%d): %s" % (snapshot[:8], rc, tail(err)))
        details, extra = compare_restored(os.path.join(scratch, marker.lstrip("/")), expected)
        bad = ["%s %s" % (d["name"], "missing" if d["restored_sha256"] is None else "sha256 differs")
               for d in details if not d["ok"]]
        bad += ["unexpected file %s" % n for n in extra]
        if bad:
            raise Failed("restored data does not match: %s" % ", ".join(bad))
        res["passed"] = True
        # housekeeping as in restore-verify: only the newest restore-test snapshots are worth keeping
        restic(["forget", "--tag", TAG, "--host", host, "--keep-last", "2"])
    except Failed as exc:
        res["error"] = str(exc)
    except OSError as exc:
        res["error"] = "restore test failed on the host: %s" % exc
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    res["seconds"] = round(time.time() - started, 1)
    res["verified_at"] = utc_now()
    return res


def repository_check(restic, subset, timeout):
    """restic check without taking the lock (an exclusive lock would make a backup that the timer starts
    meanwhile fail). Errors are confirmed under the exclusive lock only when other locks exist, i.e. a
    concurrent prune could have caused them."""
    started = time.time()
    args = ["check"] + (["--read-data-subset=%s" % subset] if subset else [])
    rc, out, err = restic(["--no-lock"] + args, timeout)
    confirmed = False
    if rc not in (0, 124):
        lrc, locks, _ = restic(["--no-lock", "list", "locks"], 120)
        if lrc == 0 and locks.strip():
            rc, out, err = restic(args, timeout)
            confirmed = True
    res = {"ok": rc == 0, "error": "", "seconds": round(time.time() - started, 1), "read_data_subset": subset or None}
    if rc != 0:
        lines = []
        for ln in (err + "\n" + out).splitlines():
            ln = ln.strip()
            if ln and "retrying after" not in ln and ln[:200] not in lines and re.search(
                    r"error|fatal|exist|not found|damaged|invalid|missing|unable|failed|timed out", ln, re.I):
                lines.append(ln[:200])
        if len(lines) > 8:  # keep the first findings and the verdict
            lines = lines[:6] + ["(%d more)" % (len(lines) - 7), lines[-1]]
        res["error"] = "restic check failed (rc=%d): %s" % (rc, " | ".join(lines) or tail(err))
        if "already locked" in err and confirmed:
            res["ok"] = None  # errors seen without the lock, but the lock stayed taken: not confirmed
    return res


def installed_backup_config(conf=os.path.join(BACKUP_DIR, "backup.json"),
                            timer="/etc/systemd/system/provisioner-backup.timer"):
    """What the backup phase installed: paths and retention from backup.json, the schedule from the
    timer unit; None when either is missing or unreadable (the service reports that as drift)."""
    try:
        with open(conf) as fh:
            cfg = json.load(fh)
        with open(timer) as fh:
            calendar = [line.split("=", 1)[1].strip() for line in fh if line.strip().startswith("OnCalendar=")]
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or len(calendar) != 1:
        return None
    return {"paths": cfg.get("paths"), "retention_days": cfg.get("retention_days"), "schedule": calendar[0]}


def backup_state(p):
    wrapper = os.access(p["restic"], os.X_OK)
    creds = all(os.path.isfile(os.path.join(BACKUP_DIR, f)) for f in ("repository", "password", "id_backup"))
    return wrapper, creds


# ---------------------------------------------------------------- main

def check_all(module, p, restic):
    # data disks: as given, or found like prov_probe does
    table = disk_table(lsblk(module))
    if p["data_disks"]:
        data_disks = [resolve_disk_path(d) for d in p["data_disks"]]
        present = [d for d in data_disks if d in table]
    else:
        data_disks = sorted(n for n, info in table.items() if candidate(info))
        present = data_disks

    report = {"raid": raid_report(module, p["raid_device"], p["raid_level"], data_disks),
              "firewall": firewall_report(module, p["ssh_port"], p["nft_state"], p["nft_conf"])}

    wrapper, creds = backup_state(p)
    rc, out, _ = run(module, ["systemctl", "is-enabled", "provisioner-backup.timer"], check=False)
    timer_enabled = out.strip() == "enabled"
    rc, out, _ = run(module, ["systemctl", "is-active", "provisioner-backup.timer"], check=False)
    timer_active = out.strip() == "active"
    try:
        with open("/var/lib/provisioner/backup-last.json") as fh:
            last = json.load(fh)
    except (OSError, ValueError):
        last = {}
    host_repo = (read(os.path.join(BACKUP_DIR, "repository"), "") or "").strip() or None
    repo_matches = None
    if restic.mode == "prov_backup":
        repo_matches = host_repo == restic.repository and file_sha(os.path.join(BACKUP_DIR, "password")) == \
            hashlib.sha256(p["backup_password"].encode()).hexdigest()
    report["backup_configured"] = wrapper and creds and timer_enabled
    report["backup"] = {"installed": wrapper and creds, "timer_enabled": timer_enabled, "timer_active": timer_active,
                        "repository": restic.repository, "host_repository": host_repo,
                        "matches_prov_backup": repo_matches, "source": restic.mode,
                        "last_backup_at": last.get("finished_at"), "last_backup_ok": last.get("ok"),
                        "last_snapshot_id": last.get("snapshot_id"), "last_error": last.get("error"),
                        "config": installed_backup_config()}
    host = p["host"] or socket.gethostname()
    if restic.problem:
        report["restore"] = {"passed": False, "error": restic.problem, "seconds": 0, "verified_at": utc_now(),
                             "checksum": None, "skipped": True}
        report["repository"] = {"ok": None, "error": restic.problem, "skipped": True}
    else:
        # {} = not tested: the service keeps the previous restore result
        report["restore"] = restore_test(restic, p, host) if p["restore"] else {}
        if p["check_repository"]:
            report["repository"] = repository_check(restic, p["read_data_subset"], p["check_timeout_seconds"])
        else:
            report["repository"] = {"ok": None, "error": "", "skipped": True}
    report["data_disks"] = data_disks
    report["data_disk_count"] = len(present)
    return report



def main():
    module = AnsibleModule(argument_spec=dict(
        raid_device=dict(type="str", default="/dev/md0"),
        raid_level=dict(type="str", default=""),
        data_disks=dict(type="list", elements="str", default=[]),
        ssh_port=dict(type="int", default=22),
        nft_state=dict(type="str", default="/var/lib/provisioner/nftables.state.json"),
        nft_conf=dict(type="str", default="/etc/nftables.conf"),
        backup_repository=dict(type="str", default=""),
        backup_port=dict(type="int", default=22),
        backup_user=dict(type="str", default=""),
        backup_password=dict(type="str", default="", no_log=True),
        backup_sftp_private_key=dict(type="str", default="", no_log=True),
        backup_host_key=dict(type="raw", default=""),
        host=dict(type="str", default=""),
        job_id=dict(type="str", default="manual"),
        restore=dict(type="bool", default=True),
        restore_files=dict(type="int", default=3),
        restore_size_kib=dict(type="int", default=256),
        marker_dir=dict(type="str", default="/srv/data/.provisioner-restore-test"),
        check_repository=dict(type="bool", default=True),
        read_data_subset=dict(type="str", default=""),
        lock_wait_seconds=dict(type="int", default=120),
        check_timeout_seconds=dict(type="int", default=300),
        restic=dict(type="str", default="/usr/local/sbin/provisioner-restic"),
        result_path=dict(type="str", default="/var/lib/provisioner/compliance.json"),
    ))
    p = module.params
    started = time.time()
    checked_at = utc_now()
    if not re.match(r"^/dev/md\d+$", p["raid_device"]):
        module.fail_json(msg="raid_device must look like /dev/mdN, got %r" % p["raid_device"])
    if p["read_data_subset"] and not re.match(r"^(\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$", p["read_data_subset"]):
        module.fail_json(msg="read_data_subset must look like 5%%, 1/10 or 100M, got %r" % p["read_data_subset"])

    restic = Restic(module, p)  # checks the backup arguments first: fail fast on bad extravars
    try:
        report = check_all(module, p, restic)
    finally:
        restic.cleanup()
    report["checked_at"] = checked_at
    report["seconds"] = round(time.time() - started, 1)
    restore, repo = report["restore"], report["repository"]
    report["all_healthy"] = bool(report["raid"]["healthy"] and not report["firewall"]["drifted"]
                               and report["firewall"]["default_policy_input"] == "drop"
                               and report["backup_configured"] and (restore.get("passed") or not restore)
                               and (repo.get("ok") or repo.get("skipped")))
    try:
        write_atomic(p["result_path"], json.dumps(report, indent=1, sort_keys=True) + "\n", 0o644)
    except OSError as exc:
        report["result_file_error"] = str(exc)
    # nothing of the host's configuration is changed; the restore test does write marker files + a snapshot
    module.exit_json(changed=bool(restore.get("snapshot_id")), compliance=report)


if __name__ == "__main__":
    main()
