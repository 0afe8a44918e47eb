from __future__ import annotations

import pytest

from provisioner.core.pipeline import next_phase, phases_for
from workers.event_sink import event_row
from workers.inventory import extravars_for, inventory_for


def test_provision_phase_order() -> None:
    assert [p.name for p in phases_for("provision")] == [
        "wipe", "raid", "firewall", "backup", "restore-verify", "handover"]
    # an image is written only by the deploy ramdisk, on a host enrolled by its BMC
    assert "image" not in [p.name for p in phases_for("provision", "vagrant")]
    assert "image" in [p.name for p in phases_for("provision", "redfish")]


def test_reimage_is_the_bare_metal_deploy_then_the_os_phases() -> None:
    deploy = ["ramdisk-boot", "ramdisk-wait", "inspect", "wipe", "image", "configure", "disk-boot", "os-wait"]
    in_os = ["raid", "firewall", "backup", "restore-verify", "handover"]
    assert [p.name for p in phases_for("reimage", "redfish")] == deploy + in_os
    assert [p.target for p in phases_for("reimage", "redfish") if p.playbook] == ["ramdisk"] * 4 + ["os"] * 5
    # the same phases as a bare-metal provision: one deploy, whatever the job's kind
    assert phases_for("reimage", "redfish") == phases_for("provision", "redfish")


def test_keep_data_reaches_the_playbooks_only_for_a_reimage() -> None:
    host = {"name": "h1", "hardware": {}}
    assert extravars_for({"id": 1, "kind": "reimage", "keep_data": True}, host, {}, None)["prov_keep_data"] is True
    assert extravars_for({"id": 1, "kind": "reimage", "keep_data": False}, host, {}, None)["prov_keep_data"] is False
    assert extravars_for({"id": 1, "kind": "reimage"}, host, {}, None)["prov_keep_data"] is True  # the default
    # a new host has no data to keep, whatever a request's params say
    ev = extravars_for({"id": 1, "kind": "provision", "keep_data": True}, host, {"keep_data": True}, None)
    assert ev["prov_keep_data"] is False
    assert extravars_for({"id": 1, "kind": "reimage"}, host, {"prov_root_disk": "/dev/sda"}, None)[
        "prov_root_disk"] == "/dev/sda"


def test_resume_after_done_phases() -> None:
    assert next_phase("provision", {"wipe", "raid"}).name == "firewall"  # type: ignore[union-attr]
    assert next_phase("release", {"release"}) is None


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown job kind"):
        phases_for("explode")


def test_ssh_inventory_names_key_and_options() -> None:
    inv = inventory_for({"connection": "ssh", "address": "10.0.0.5", "port": 2222, "ssh_user": "ops"}, "/k")
    hv = inv["all"]["hosts"]["target"]
    assert hv["ansible_host"] == "10.0.0.5" and hv["ansible_port"] == 2222 and hv["ansible_user"] == "ops"
    assert hv["ansible_ssh_private_key_file"] == "/k"
    assert "ServerAliveInterval" in hv["ansible_ssh_common_args"]


def test_ssh_inventory_checks_the_pinned_host_key_strictly() -> None:
    host = {"connection": "ssh", "address": "10.0.0.5", "port": 22, "ssh_user": "ops", "host_key": "ssh-rsa AAAA"}
    args = inventory_for(host, None, "/data/known_hosts")["all"]["hosts"]["target"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args and "StrictHostKeyChecking=no" not in args
    assert "-o UserKnownHostsFile=/data/known_hosts -o GlobalKnownHostsFile=/dev/null" in args
    assert "HostKeyAlgorithms=rsa-sha2-512,rsa-sha2-256" in args and "UpdateHostKeys=no" in args
    ed = inventory_for(host | {"host_key": "ssh-ed25519 AAAA"}, None, "/k")["all"]["hosts"]["target"]
    assert ed["ansible_ssh_common_args"].endswith("HostKeyAlgorithms=ssh-ed25519")


def test_extravars_from_request() -> None:
    ev = extravars_for({"id": 7, "kind": "provision"},
                       {"name": "h1", "hardware": {"disks": [{"name": "/dev/vdb"}, {"name": "/dev/vdc"}]}},
                       {"raid_level": "1", "ssh_public_key": "ssh-ed25519 AAA", "firewall_ports": [{"port": 80}]},
                       {"repository": "sftp:x@y:/b/h1", "password": "pw"})
    assert ev["provisioner_data_disks"] == ["/dev/vdb", "/dev/vdc"]
    assert ev["provisioner_customer_ssh_pubkey"] == "ssh-ed25519 AAA"
    assert ev["provisioner_backup"]["repository"] == "sftp:x@y:/b/h1"
    assert ev["provisioner_image"] is None


@pytest.mark.parametrize("name,res,ignore,status", [
    ("runner_on_ok", {"changed": True}, False, "changed"),
    ("runner_on_ok", {"changed": False}, False, "ok"),
    ("runner_on_failed", {}, False, "failed"),
    ("runner_on_failed", {}, True, "ignored"),
    ("runner_on_unreachable", {}, False, "unreachable"),
    ("runner_on_skipped", {}, False, "skipped"),
    ("playbook_on_start", {}, False, None),
])
def test_event_row_status(name: str, res: dict, ignore: bool, status: str | None) -> None:
    row = event_row({"event": name, "stdout": "x" * 50, "event_data": {"res": res, "ignore_errors": ignore,
                                                                       "task": "t", "host": "target"}},
                    job_id=1, seq=3, phase="wipe", stdout_max=10)
    # cut later, by the sink, after scrubbing (up to SCRUB_SLACK past the limit arrives there)
    assert row["status"] == status and row["stdout"] == "x" * 50 and row["phase"] == "wipe"
