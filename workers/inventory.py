"""Inventory and extravars for one phase, built from database rows. Pure: no I/O."""

from __future__ import annotations

import sys
from typing import Any

SSH_ARGS = (
    "-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes -o UpdateHostKeys=no "
    "-o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o ConnectTimeout=10"
)


def host_key_algorithms(key_type: str) -> str:
    """The signature algorithms that make the server present the pinned key's type (an RSA key
    signs with rsa-sha2-*; the key type ssh-rsa names the SHA-1 algorithm OpenSSH refuses)."""
    return "rsa-sha2-512,rsa-sha2-256" if key_type == "ssh-rsa" else key_type


def inventory_for(host: dict[str, Any], key_file: str | None, known_hosts_file: str | None = None) -> dict[str, Any]:
    """An ssh host is reached only with its pinned key: a known_hosts file with that one line and
    strict checking (without a file, the user's own known_hosts is the only trust, still strict)."""
    if host["connection"] == "local":
        vars_: dict[str, Any] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    else:
        vars_ = {
            "ansible_host": host["address"],
            "ansible_port": host["port"],
            "ansible_user": host["ssh_user"],
            "ansible_ssh_common_args": SSH_ARGS + (
                f" -o UserKnownHostsFile={known_hosts_file} -o GlobalKnownHostsFile=/dev/null"
                if known_hosts_file else ""),
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        if key_file:
            vars_["ansible_ssh_private_key_file"] = key_file
        if host.get("host_key"):
            vars_["ansible_ssh_common_args"] += " -o HostKeyAlgorithms=" + host_key_algorithms(
                str(host["host_key"]).split()[0])
    return {"all": {"hosts": {"target": vars_}}}


def _data_disks(hw: dict[str, Any]) -> list[str]:
    # Commission reports which disks hold no system mount; older facts only list disks.
    if isinstance(hw.get("data_disks"), list):
        return [d if isinstance(d, str) else d.get("name") for d in hw["data_disks"]]
    return [d["name"] for d in hw.get("disks") or [] if d.get("name")]


def extravars_for(job: dict[str, Any], host: dict[str, Any], request_params: dict[str, Any],
                  backup: dict[str, Any] | None) -> dict[str, Any]:
    hw = host.get("hardware") or {}
    ev: dict[str, Any] = {
        "provisioner_job_id": job["id"],
        "prov_job_kind": job["kind"],
        "provisioner_host_name": host["name"],
        "prov_host_labels": host.get("labels") or {},
        "provisioner_data_disks": _data_disks(hw),
        "provisioner_raid_level": request_params.get("raid_level") or "1",
        "provisioner_firewall_ports": request_params.get("firewall_ports") or [],
        "provisioner_customer_user": request_params.get("customer_user", "customer"),
        "provisioner_customer_ssh_pubkey": request_params.get("ssh_public_key", ""),
        "provisioner_image": request_params.get("image_spec"),
        # A reimage keeping the host's data array: the ramdisk's wipe spares the data disks and the
        # raid phase assembles the existing array instead of creating one. Never for a new host.
        "prov_keep_data": job["kind"] == "reimage" and bool(job.get("keep_data", True)),
    }
    # The configure phase of a bare-metal deploy: where the image went, and the host's files (a
    # private host key among them: its playbook never logs them).
    for key in ("prov_root_disk", "prov_config_bundle_b64"):  # prov_root_disk: the ramdisk's wipe too
        if key in request_params:
            ev[key] = request_params[key]
    if request_params.get("mgmt_cidrs"):
        ev["provisioner_mgmt_cidrs"] = request_params["mgmt_cidrs"]
    if backup is not None:
        ev["provisioner_backup"] = backup
    return ev
