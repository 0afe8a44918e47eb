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


def test_scrub_removes_temp_dirs_and_key_files(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    key = tmp_path / "keys" / "id_lab1"
    text = (f"Warning: Identity file {key} not accessible: No such file or directory.\r\n"
            "cannot read /tmp/prov-job-k2j3h4/env/extravars; "
            "'/root/.ansible/tmp/ansible-local-4242xyz/tmpa1' left; /var/tmp/prov-restore-7-abc stays")
    out = private_dirs.scrub(text, s, [str(key), None])
    assert out == (f"Warning: Identity file {private_dirs.SCRUBBED_KEY} not accessible: No such file or directory."
                   f"\r\ncannot read {private_dirs.SCRUBBED_TEMP}; '{private_dirs.SCRUBBED_TEMP}' left; "
                   "/var/tmp/prov-restore-7-abc stays"), out
