"""Every playbook loads: `ansible-playbook --syntax-check` parses each play and splits each task's
arguments, which catches what YAML and ansible-lint let through (a quote left open in a shell
block's comment makes ansible refuse the whole play at run time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PLAYBOOKS = sorted((Path(__file__).resolve().parents[2] / "playbooks").glob("*.yml"))
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.skipif(not ANSIBLE.exists(), reason="no ansible-playbook in this venv")
def test_every_playbook_loads() -> None:
    assert len(PLAYBOOKS) > 10, PLAYBOOKS
    # One run for all of them (ansible's start-up is most of the time); its error names the file.
    run = subprocess.run([str(ANSIBLE), "--syntax-check", "-i", "localhost,", *map(str, PLAYBOOKS)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"a playbook does not load:\n{run.stdout[-3000:]}\n{run.stderr}"
