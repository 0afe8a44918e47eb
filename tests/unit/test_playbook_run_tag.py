"""Every play tags its remote commands with the phase run's tag: a play without it would leave
its work running on the host after a cancel or a timeout (workers/remote_stop.py kills by it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workers.remote_stop import TAG_VAR

ROOT = Path(__file__).resolve().parents[2]
BOOKS = sorted([*ROOT.glob("playbooks/*.yml"), *ROOT.glob("tests/playbooks/*.yml")])


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_play_carries_the_run_tag(path: Path) -> None:
    plays = yaml.safe_load(path.read_text())
    assert isinstance(plays, list) and plays
    for play in plays:
        if "import_playbook" in play:
            continue  # the imported file is checked itself
        assert play.get("environment", {}).get(TAG_VAR) == "{{ provisioner_run_tag | default('') }}", \
            f"{path.name}: play {play.get('name')!r} does not put {TAG_VAR} in its remote commands' environment"
