#!/usr/bin/python
"""Backup/restore round trip through the provisioner restic repository, verified by sha256."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_restore_verify
short_description: Prove that backups restore (marker files -> restic backup -> restore -> sha256 compare)
description:
  - Writes I(files) random marker files of I(size_kib) KiB under I(marker_dir) (replacing the previous set),
    backs them up with the provisioner restic wrapper (tag provisioner-restore-test), restores that snapshot
    into I(scratch_dir), compares sha256 checksums and records the outcome in I(result_path).
  - Fails when anything does not match. Older restore-test snapshots of this host are forgotten (keep last 2).
options:
  job_id:
    description: Provisioning job id (recorded in the result and used in the default scratch directory name).
    type: str
    default: manual
  marker_dir:
    description: Directory for the marker files (inside the backed-up paths).
    type: str
    default: /srv/data/.provisioner-restore-test
  scratch_dir:
    description: Restore target; empty = a fresh directory from mkdtemp, /var/tmp/prov-restore-<job_id>-XXXXXXXX.
    type: str
    default: ""
  files:
    description: Number of marker files.
    type: int
    default: 3
  size_kib:
    description: Size of each marker file in KiB.
    type: int
    default: 256
  result_path:
    description: JSON file the outcome is written to.
    type: str
    default: /var/lib/provisioner/restore-test.json
  restic:
    description: The restic wrapper bound to the repository (installed by the backup phase).
    type: str
    default: /usr/local/sbin/provisioner-restic
  host:
    description: restic --host; empty = the machine's hostname.
    type: str
    default: ""
  keep_scratch:
    description: Keep the restored files for inspection.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Backup, restore and compare marker files
  prov_restore_verify:
    job_id: "{{ provisioner_job_id }}"
    files: 3
    size_kib: 256
"""

RETURN = r"""
passed:
  description: Whether every restored file matched.
  returned: always
  type: bool
  sample: true
snapshot_id:
  description: The restic snapshot that was restored.
  returned: always
  type: str
  sample: 4f8e1c2a
files:
  description: Number of marker files.
  returned: always
  type: int
  sample: 3
bytes:
  description: Total marker bytes.
  returned: always
  type: int
  sample: 786432
checksum:
  description: Combined sha256 of the marker set.
  returned: always
  type: str
seconds:
  description: Duration of the test.
  returned: always
  type: float
  sample: 4.2
verified_at:
  description: UTC timestamp (ISO 8601).
  returned: always
  type: str
  sample: "2026-01-01T00:00:00+00:00"
job_id:
  description: The I(job_id) given.
  returned: always
  type: str
marker_dir:
  description: Normalised I(marker_dir).
  returned: always
  type: str
scratch_dir:
  description: Restore target used.
  returned: always
  type: str
unexpected_files:
  description: Restored files that were not expected.
  returned: always
  type: list
  elements: str
  sample: []
details:
  description: Per-file comparison.
  returned: always
  type: list
  elements: dict
forget_ok:
  description: Whether forgetting older restore-test snapshots succeeded.
  returned: always
  type: bool
  sample: true
"""

import datetime
import json
import os
import shutil
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import run, write_atomic
from ansible.module_utils.prov_restore import TAG, compare_restored, make_scratch, safe_job, snapshot_of, write_markers


def main():
    module = AnsibleModule(argument_spec=dict(
        job_id=dict(type="str", default="manual"),
        marker_dir=dict(type="str", default="/srv/data/.provisioner-restore-test"),
        scratch_dir=dict(type="str", default=""),
        files=dict(type="int", default=3),
        size_kib=dict(type="int", default=256),
        result_path=dict(type="str", default="/var/lib/provisioner/restore-test.json"),
        restic=dict(type="str", default="/usr/local/sbin/provisioner-restic"),
        host=dict(type="str", default=""),
        keep_scratch=dict(type="bool", default=False),
    ))
    p = module.params
    if not os.access(p["restic"], os.X_OK):
        module.fail_json(msg="%s missing: run the backup phase (or pass provisioner_backup) first" % p["restic"])
    job = safe_job(p["job_id"])
    scratch = p["scratch_dir"]
    marker = os.path.normpath(p["marker_dir"])
    host = p["host"] or socket.gethostname()
    started = time.time()

    expected, checksum = write_markers(marker, p["files"], p["size_kib"])
    _, out, err = run(module, [p["restic"], "backup", "--json", "--tag", TAG, "--host", host, marker])
    snapshot = snapshot_of(out)
    if not snapshot:
        module.fail_json(msg="restic backup reported no snapshot id", stderr=err)

    if scratch:  # the caller's own directory, made afresh
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch, 0o700)
    else:
        scratch = make_scratch(job)
    run(module, [p["restic"], "restore", snapshot, "--target", scratch])
    details, extra = compare_restored(os.path.join(scratch, marker.lstrip("/")), expected)
    passed = all(d["ok"] for d in details) and not extra
    seconds = round(time.time() - started, 1)
    result = {
        "passed": passed, "snapshot_id": snapshot, "files": len(expected), "bytes": len(expected) * p["size_kib"] * 1024,
        "checksum": checksum, "seconds": seconds,
        "verified_at": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "job_id": p["job_id"], "marker_dir": marker, "scratch_dir": scratch, "unexpected_files": extra,
        "details": details,
    }
    write_atomic(p["result_path"], json.dumps(result, indent=1, sort_keys=True) + "\n", 0o644)
    if not p["keep_scratch"]:
        shutil.rmtree(scratch, ignore_errors=True)
    # housekeeping: only the newest restore-test snapshots are worth keeping
    rc, _, ferr = run(module, [p["restic"], "forget", "--tag", TAG, "--host", host, "--keep-last", "2"], check=False)
    result["forget_ok"] = rc == 0
    if not passed:
        module.fail_json(msg="restore verification FAILED: restored data does not match", **result)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
