"""What our way of running a playbook costs on the controller: the same playbook against the same
sshd, run by the service's bridge (workers/ansible_bridge.py: ansible-runner, its event callback, the
job's key through ssh-agent, events handed to a callback) and by bare `ansible-playbook` with the key
in a file, alternately, several times. Wall and CPU seconds (this process and every child) per run.

The sshd is a local OpenSSH server, so the host side costs almost nothing and the controller's share
shows; on a lab VM under TCG every task also waits for the emulated machine. Each run starts without
an SSH master connection (its own ControlPath dir), as a phase whose host just rebooted does.

    .venv/bin/python bench/bench_runner.py [--tasks 30] [--rounds 3]
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bare_playbook  # noqa: E402  (beside this script)

from tests.integration.sshd import Sshd  # noqa: E402
from workers.ansible_bridge import run_playbook  # noqa: E402
from workers.inventory import inventory_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def write_playbook(path: Path, tasks: int) -> None:
    """A phase's shape: commands, a file written, facts set, a result in the custom stats."""
    lines = ["- hosts: target", "  gather_facts: false", "  tasks:"]
    for i in range(tasks):
        if i % 3 == 0:
            lines += [f"    - name: command {i}", "      ansible.builtin.command: /bin/true",
                      "      changed_when: false"]
        elif i % 3 == 1:
            lines += [f"    - name: file {i}", "      ansible.builtin.lineinfile:", f"        line: 'line {i}'",
                      f"        path: '{{{{ work }}}}/f{i}'", "        create: true", "        mode: '0600'"]
        else:
            lines += [f"    - name: fact {i}", "      ansible.builtin.set_fact:", f"        f{i}: '{{{{ 40 * {i} }}}}'"]
    lines += ["    - name: result", "      ansible.builtin.set_stats:", "        data:",
              "          prov_result: {done: true}"]
    path.write_text("\n".join(lines) + "\n")


def bridge_run(sshd: Sshd, playbook: Path, tmp: Path, extravars: dict[str, Any]) -> int:
    host = {"connection": "ssh", "address": "127.0.0.1", "port": sshd.port, "ssh_user": os.environ.get("USER", "root"),
            "host_key": sshd.public_host_key}
    events = 0

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal events
        events += 1

    out = run_playbook(playbook=playbook, inventory=lambda kh: inventory_for(host, None, kh),
                       known_hosts=f"[127.0.0.1]:{sshd.port} {sshd.public_host_key}", extravars=extravars,
                       ssh_key=sshd.client_key.read_text(), timeout_s=600, should_cancel=lambda: False,
                       on_event=on_event, work_root=tmp)
    assert out.ok and out.result.get("done"), (out.status, out.failures, out.tail)
    return events


def bare_run(sshd: Sshd, playbook: Path, tmp: Path, extravars: dict[str, Any]) -> None:
    kh = tmp / "kh"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {sshd.public_host_key}")
    host = {"connection": "ssh", "address": "127.0.0.1", "port": sshd.port, "ssh_user": os.environ.get("USER", "root"),
            "host_key": sshd.public_host_key}
    inv, ev = tmp / "inv.json", tmp / "ev.json"
    inv.write_text(json.dumps(inventory_for(host, str(sshd.client_key), str(kh))))
    ev.write_text(json.dumps(extravars))
    bare_playbook.run(playbook, inv, ev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sshd = Sshd(tmp / "sshd")
        try:
            playbook = tmp / "phase.yml"
            write_playbook(playbook, args.tasks)
            work = tmp / "remote"
            work.mkdir()
            runs: dict[str, list[tuple[float, float]]] = {"bridge": [], "bare": []}
            events = 0
            for r in range(args.rounds):
                for kind in ("bridge", "bare") if r % 2 == 0 else ("bare", "bridge"):
                    os.environ["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(tmp / f"cp-{kind}-{r}")
                    run_tmp = tmp / f"{kind}-{r}"
                    run_tmp.mkdir()
                    c0, t0 = cpu(), time.monotonic()
                    if kind == "bridge":
                        events = bridge_run(sshd, playbook, run_tmp, {"work": str(work)})
                    else:
                        bare_run(sshd, playbook, run_tmp, {"work": str(work)})
                    runs[kind].append((time.monotonic() - t0, cpu() - c0))
        finally:
            sshd.stop()
    print(f"{args.tasks + 1} tasks against a local sshd, {args.rounds} rounds, alternating; the bridge saw "
          f"{events} events per run")
    print(f"{'runner':8s} {'wall s (median)':>16s} {'[min-max]':>14s} {'CPU s (median)':>15s}")
    for kind, got in runs.items():
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        print(f"{kind:8s} {statistics.median(walls):16.2f} [{min(walls):5.2f}-{max(walls):5.2f}] "
              f"{statistics.median(cpus):15.2f}")
    ratio = statistics.median(w for w, _ in runs["bridge"]) / statistics.median(w for w, _ in runs["bare"])
    print(f"bridge / bare wall: {ratio:.3f}")


if __name__ == "__main__":
    main()
