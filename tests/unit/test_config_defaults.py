"""The settings' defaults point into this checkout: the playbooks and the lab script exist."""

from __future__ import annotations

from pathlib import Path

from provisioner.store.config import Settings


def test_default_paths_exist(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert (Path(s.playbook_dir) / "commission.yml").is_file(), s.playbook_dir
    assert Path(s.lab_cmd).is_file() and Path(s.lab_cmd).name == "lab", s.lab_cmd
