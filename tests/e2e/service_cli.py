"""The `provisioner` CLI as an operator runs it against an e2e test's service (the README's way:
PROVISIONER_URL + PROVISIONER_TOKEN, JSON output), with none of the test process's own settings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "provisioner"


def cli(svc: dict[str, Any], *args: str, ok: bool = True) -> Any:
    """-> the command's JSON output (ok=True: it must succeed), or the CompletedProcess (ok=False)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | {
        "PROVISIONER_URL": svc["url"], "PROVISIONER_TOKEN": svc["op_token"]}
    r = subprocess.run([str(BIN), "-o", "json", *args], env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout)
    return r
