"""prov_md_raid with keep_data (a reimage keeping the host's data array): the existing array is
assembled from the disks' superblocks, or adopted when the new OS auto-assembled it under another
name, and never created; no array there fails the phase. The mdadm commands are recorded against a
fake md layer: this machine's kernel has no md driver (no /proc/mdstat), so loop devices cannot
carry a real array here (the lab's reimage checks a marker file on a real one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROLE = Path(__file__).resolve().parents[2] / "playbooks/roles/provisioner"
for util in ("prov_block",):
    util_spec = importlib.util.spec_from_file_location(f"ansible.module_utils.{util}", ROLE / f"module_utils/{util}.py")
    assert util_spec and util_spec.loader
    sys.modules[util_spec.name] = importlib.util.module_from_spec(util_spec)
    util_spec.loader.exec_module(sys.modules[util_spec.name])
spec = importlib.util.spec_from_file_location("prov_md_raid", ROLE / "library/prov_md_raid.py")
assert spec and spec.loader
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

DISKS = ["/dev/vdb", "/dev/vdc"]


class Done(Exception):
    def __init__(self, failed: bool, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.failed = failed
        self.result = result


def array(name_members: list[str]) -> dict[str, Any]:
    return {"level": "raid1", "members": name_members, "whole_disk_members": True, "array_state": "clean",
            "degraded": 0, "sync_action": "idle", "sync_completed": "none"}


class FakeMd:
    """/proc/mdstat and mdadm as the module sees them: `arrays` running, `superblocks` per disk."""

    def __init__(self, arrays: dict[str, dict[str, Any]], superblocks: dict[str, dict[str, str]]) -> None:
        self.arrays = arrays
        self.superblocks = superblocks
        self.commands: list[list[str]] = []

    def run(self, module: Any, cmd: list[str], check: bool = True, data: str | None = None) -> tuple[int, str, str]:
        self.commands.append(cmd)
        if cmd[:2] == ["mdadm", "--stop"]:
            self.arrays.pop(cmd[2], None)
        elif cmd[:2] == ["mdadm", "--assemble"]:
            self.arrays[cmd[2]] = array(cmd[4:])
        elif cmd[:2] == ["mdadm", "--create"]:
            self.arrays[cmd[2]] = array(cmd[-len(DISKS):])
        elif cmd[:3] == ["mdadm", "--detail", "--brief"]:
            return 0, f"ARRAY {cmd[3]} metadata=1.2 UUID=aa:bb:cc:dd\n", ""
        return 0, "", ""

    def export(self, module: Any, args: list[str]) -> dict[str, str]:
        if args[0] == "--examine":
            return self.superblocks.get(args[1], {})
        return {"MD_UUID": "aa:bb:cc:dd"}


def run_module(monkeypatch: pytest.MonkeyPatch, md: FakeMd, keep_data: bool) -> Done:
    params = {"device": "/dev/md0", "level": "1", "disks": DISKS, "wait_seconds": 0, "assume_clean": False,
              "keep_data": keep_data, "name": None, "mdadm_conf": "/nonexistent/mdadm.conf"}

    class Module:
        def __init__(self, argument_spec: dict[str, Any], **kw: Any) -> None:
            assert set(argument_spec) == set(params)
            self.params = params

        def fail_json(self, **kw: Any) -> NoReturn:
            raise Done(True, kw)

        def exit_json(self, **kw: Any) -> NoReturn:
            raise Done(False, kw)

    monkeypatch.setattr(mod, "AnsibleModule", Module)
    monkeypatch.setattr(mod, "md_arrays", lambda: {k: dict(v) for k, v in md.arrays.items()})
    monkeypatch.setattr(mod, "mdadm_export", md.export)
    monkeypatch.setattr(mod, "run", md.run)
    monkeypatch.setattr(mod, "resolve_disk_path", lambda d: d)
    monkeypatch.setattr(mod, "mdstat_block", lambda dev: "md0 : active raid1 vdc[1] vdb[0]\n [2/2] [UU]")
    monkeypatch.setattr(mod, "mdadm_conf_update", lambda *a, **kw: ("", ""))
    with pytest.raises(Done) as exc:
        mod.main()
    return exc.value


OURS = {"MD_UUID": "11:22:33:44", "MD_LEVEL": "raid1", "MD_DEVICES": "2"}


def created(md: FakeMd) -> bool:
    return any(c[:2] == ["mdadm", "--create"] for c in md.commands)


def test_keep_data_assembles_the_existing_array(monkeypatch: pytest.MonkeyPatch) -> None:
    md = FakeMd({}, {d: OURS for d in DISKS})
    done = run_module(monkeypatch, md, keep_data=True)
    assert not done.failed and done.result["action"] == "assembled", done.result
    assert ["mdadm", "--assemble", "/dev/md0", "--run", *DISKS] in md.commands and not created(md)


def test_keep_data_adopts_an_array_the_new_os_auto_assembled(monkeypatch: pytest.MonkeyPatch) -> None:
    md = FakeMd({"/dev/md127": array(DISKS)}, {d: OURS for d in DISKS})
    done = run_module(monkeypatch, md, keep_data=True)
    assert not done.failed and done.result["action"] == "assembled", done.result
    assert md.commands[0] == ["mdadm", "--stop", "/dev/md127"] and not created(md)


def test_keep_data_never_creates_an_array(monkeypatch: pytest.MonkeyPatch) -> None:
    md = FakeMd({}, {})
    done = run_module(monkeypatch, md, keep_data=True)
    assert done.failed and "keep_data: no md array" in done.result["msg"], done.result
    assert not created(md) and md.commands == []


def test_keep_data_leaves_a_foreign_array_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    md = FakeMd({}, {DISKS[0]: OURS, DISKS[1]: OURS | {"MD_UUID": "99:99:99:99"}})
    done = run_module(monkeypatch, md, keep_data=True)
    assert done.failed and "left as they are" in done.result["msg"] and md.commands == []


def test_without_keep_data_blank_disks_get_a_new_array(monkeypatch: pytest.MonkeyPatch) -> None:
    md = FakeMd({}, {})
    done = run_module(monkeypatch, md, keep_data=False)
    assert not done.failed and done.result["action"] == "created" and created(md), done.result
