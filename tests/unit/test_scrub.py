"""Job errors lose the worker's private-dir paths (both the configured and the resolved form)."""

from __future__ import annotations

import os
from pathlib import Path

from provisioner.store.config import Settings
from workers import private_dirs


def test_scrub_removes_private_paths_only(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    s = Settings(data_dir=tmp_path / "link")
    root = private_dirs.runs_root(s)
    text = (f"task 'x': cannot open {root}/h-1-ab/prov-job-x/env/extravars; "
            f"also '{os.path.realpath(tmp_path / 'link')}/phase-runs/h-1-ab/inventory/hosts', not /etc/hosts")
    out = private_dirs.scrub(text, s)
    assert "phase-runs" not in out and str(tmp_path) not in out, out
    assert out == (f"task 'x': cannot open {private_dirs.SCRUBBED}; also '{private_dirs.SCRUBBED}', "
                   "not /etc/hosts")
