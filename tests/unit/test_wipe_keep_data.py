"""wipe.yml with prov_keep_data (a reimage keeping the host's data, in the deploy ramdisk): the disk
list the wipe module gets is the root disk alone, and a run without prov_root_disk refuses instead
of guessing. The expressions are read from the shipped playbook and rendered by Ansible's templar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

PLAY = yaml.safe_load((Path(__file__).resolve().parents[2] / "playbooks/wipe.yml").read_text())[0]
PROBE = {"provisioner_probe": {"data_disks": ["/dev/sdb", "/dev/sdc"]}}


def task(module: str) -> dict[str, Any]:
    return next(t for t in PLAY["tasks"] if module in t)


def render(expr: str, **variables: Any) -> Any:
    play_vars = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in PLAY.get("vars", {}).items()}
    return Templar(loader=DataLoader(), variables=PROBE | play_vars | variables).template(trust_as_template(expr))


def test_keep_data_wipes_only_the_root_disk() -> None:
    disks = task("prov_disk_wipe")["prov_disk_wipe"]["disks"]
    assert render(disks, prov_keep_data=True, prov_root_disk="/dev/sda") == ["/dev/sda"]
    # A deploy in the ramdisk: the data disks and the disk the image goes to.
    assert render(disks, prov_keep_data=False, prov_root_disk="/dev/sda") == ["/dev/sdb", "/dev/sdc", "/dev/sda"]
    assert render(disks) == ["/dev/sdb", "/dev/sdc"]  # a provision in the host's OS: every data disk, as before


def test_keep_data_without_a_root_disk_refuses() -> None:
    guard = task("ansible.builtin.assert")
    cond = "{{ " + guard["when"] + " }}"
    (check,) = guard["ansible.builtin.assert"]["that"]
    assert render(cond, prov_keep_data=True) is True and render(cond) is False
    assert render("{{ " + check + " }}", prov_keep_data=True) is False
    assert render("{{ " + check + " }}", prov_keep_data=True, prov_root_disk="/dev/sda") is True
