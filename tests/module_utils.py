"""Load one of the playbooks' module_utils files as a plain module: they are pure Python that runs on
the target host, so their rules are tested here without Ansible."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

MODULE_UTILS = Path(__file__).resolve().parents[1] / "playbooks" / "roles" / "provisioner" / "module_utils"


def load_module_util(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MODULE_UTILS / f"{name}.py")
    assert spec and spec.loader, f"no module_utils/{name}.py"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
