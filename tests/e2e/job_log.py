"""Waiting for a job in the end-to-end suite, with what a failed run needs printed beside it."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.procs import Api


def wait_job(api: Api, job_id: int, timeout: float) -> dict[str, Any]:
    """The job once it ended (or AssertionError after `timeout` s); its status, error, phase times
    and SLIs printed (pytest shows them with a failure)."""
    job = api.wait_job(job_id, timeout=timeout)
    print(f"job {job_id} {job['kind']}: {job['status']} error={job['error']}")
    print("phases:", json.dumps({p["name"]: p.get("duration_s") for p in job["phases"]}),
          "sli:", json.dumps(job.get("sli")))
    return job
