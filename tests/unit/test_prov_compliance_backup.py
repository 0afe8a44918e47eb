"""prov_compliance reads the installed backup configuration back from the host's files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROLE = Path(__file__).resolve().parents[2] / "playbooks/roles/provisioner"
SRC = ROLE / "library/prov_compliance.py"
# The module imports the role's module_utils the way Ansible ships them: load the real files under those names.
for util in ("prov_block", "prov_nft", "prov_restore"):
    util_spec = importlib.util.spec_from_file_location(f"ansible.module_utils.{util}", ROLE / f"module_utils/{util}.py")
    assert util_spec and util_spec.loader
    sys.modules[util_spec.name] = importlib.util.module_from_spec(util_spec)
    util_spec.loader.exec_module(sys.modules[util_spec.name])
spec = importlib.util.spec_from_file_location("prov_compliance", SRC)
assert spec and spec.loader
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)


def test_reads_paths_retention_and_schedule(tmp_path: Path) -> None:
    conf, timer = tmp_path / "backup.json", tmp_path / "provisioner-backup.timer"
    conf.write_text(json.dumps({"paths": ["/srv/app"], "retention_days": 21, "tag": "provisioner"}))
    timer.write_text("[Timer]\nOnCalendar=*-*-* 00/6:00:00\nPersistent=true\n")
    assert mod.installed_backup_config(str(conf), str(timer)) == {
        "paths": ["/srv/app"], "retention_days": 21, "schedule": "*-*-* 00/6:00:00"}


def test_missing_or_broken_files_read_as_none(tmp_path: Path) -> None:
    conf, timer = tmp_path / "backup.json", tmp_path / "provisioner-backup.timer"
    assert mod.installed_backup_config(str(conf), str(timer)) is None
    conf.write_text("{not json")
    timer.write_text("OnCalendar=daily\n")
    assert mod.installed_backup_config(str(conf), str(timer)) is None
    conf.write_text("{}")
    timer.write_text("[Timer]\n")  # no schedule at all
    assert mod.installed_backup_config(str(conf), str(timer)) is None
