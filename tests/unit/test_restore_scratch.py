"""The restore test's scratch dir on a host: made by mkdtemp (unpredictable name, 0700, never an
existing path), not a fixed /var/tmp/prov-restore-<job> that a local user could prepare."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from tests.module_utils import MODULE_UTILS, load_module_util

prov_restore = load_module_util("prov_restore")


def test_scratch_dirs_are_fresh_private_and_unpredictable() -> None:
    # A path the old fixed name would have used, prepared by someone else beforehand.
    planted = Path("/var/tmp/prov-restore-42")
    planted.mkdir(exist_ok=True)
    made: list[str] = []
    try:
        made = [prov_restore.make_scratch("42") for _ in range(2)]
        assert made[0] != made[1] and str(planted) not in made
        for d in made:
            assert os.path.dirname(d) == "/var/tmp" and os.path.basename(d).startswith("prov-restore-42-")
            st = os.lstat(d)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
            assert os.listdir(d) == []
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        planted.rmdir()


def test_modules_use_it() -> None:
    lib = MODULE_UTILS.parent / "library"
    for module in ("prov_restore_verify.py", "prov_compliance.py"):
        text = (lib / module).read_text()
        assert "make_scratch(" in text and '"/var/tmp/prov-restore-' not in text, module
