"""Guardrails through the API: admission refusals listing every violation, waivers, quotas, leases,
the policy document, and the audit entries of each step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import select

from provisioner.core.timeutil import iso, parse_iso, utcnow
from provisioner.store.db import session_scope
from provisioner.store.guardrail_models import Waiver
from provisioner.store.image_models import Image
from provisioner.store.models import HostRequest, Job
from tests.integration.harness import World

JUSTIFICATION = "Data is replicated to the DR site nightly; backups come with the new store in May."


def put(w: World, who: str, path: str, body: Any) -> Any:
    return w.client.put(path, headers=w.h(who), json=body)


def rows(*models: Any) -> tuple[int, ...]:
    with session_scope() as s:
        return tuple(s.exec(select(func.count()).select_from(m)).one() for m in models)


def audit(w: World, action: str) -> list[dict[str, Any]]:
    return w.get("auditor", "/v1/audit", params={"action": action, "limit": 500}).json()["items"]


def ask_waiver(w: World, who: str = "cust_a", code: str = "backup.required", scope: str = "tenant:acme",
               justification: str = JUSTIFICATION) -> Any:
    return w.post(who, "/v1/waivers", {"code": code, "scope": scope, "justification": justification})


def in_days(days: float) -> str:
    return iso(utcnow() + timedelta(days=days)) or ""


def codes(r: Any) -> list[str]:
    return [v["code"] for v in r.json()["violations"]]


def test_refused_request_lists_every_violation_and_writes_nothing(world: World) -> None:
    host = world.enroll("node1")
    before = rows(HostRequest, Job, Waiver)
    audit_before = len(audit(world, "request.create"))
    ports = [{"port": 22, "sources": ["0.0.0.0/0"]}] + [
        {"port": 8000 + i, "sources": ["10.0.0.0/8"]} for i in range(16)]
    r = world.request("imager", firewall_ports=ports, backup={"enabled": False}, raid_level="0",
                      image=catalogue_image("debian-13", "candidate"), lease_hours=1000)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "guardrails.violations" and "hint" in body and "POST /v1/waivers" in body["hint"]
    assert sorted(codes(r)) == sorted([
        "firewall.management_port_open_to_world", "firewall.too_many_ports", "backup.required",
        "raid.required", "image.channel_not_allowed", "lease.too_long"])
    by_code = {v["code"]: v for v in body["violations"]}
    assert by_code["backup.required"]["waivable"] is True
    assert by_code["firewall.management_port_open_to_world"]["waivable"] is False
    assert "22/tcp" in by_code["firewall.management_port_open_to_world"]["message"]
    assert "17 distinct ports" in by_code["firewall.too_many_ports"]["message"]
    assert all(v["remedy"] and v["rule"] for v in body["violations"])
    assert "6 guardrail(s)" in body["detail"]
    # Nothing written: no request, no job, the host stays available, no audit entry.
    assert rows(HostRequest, Job, Waiver) == before
    assert world.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "available"
    assert len(audit(world, "request.create")) == audit_before
    # The default request (backup on, no ports, pool default RAID, stable image) is admitted.
    ok = world.request()
    assert ok.status_code == 202, ok.text
    assert world.wait_job(ok.json()["job_ids"][0])["status"] == "succeeded"


def catalogue_image(name: str, channel: str) -> str:
    """A catalogue record with stored bytes, so only its channel decides (no upload needed)."""
    with session_scope() as s:
        s.add(Image(name=name, version="1", os_name="debian", os_version="13", format_in="raw", channel=channel,
                    size=1, sha256="0" * 64, stored_path=f"{name}.raw", published_by="imager"))
        s.commit()
    return name


def test_image_channels_by_role_and_pool(sqlite_world: World) -> None:
    w = sqlite_world
    candidate = catalogue_image("debian-13", "candidate")
    r = w.request(image=candidate, pool="lab")
    assert r.status_code == 422 and r.json()["code"] == "image.channel_not_allowed", r.text
    # An imager may use candidate images on lab pools: admitted, then refused only for want of a BMC host.
    r = w.request("imager", image=candidate, pool="lab")
    assert r.status_code == 409 and r.json()["code"] == "image.needs_bmc", r.text
    # ...but never on a production pool: the catalogue's channel is judged, not the name.
    r = w.request("imager", image=candidate)
    assert r.status_code == 422 and codes(r) == ["image.channel_not_allowed"], r.text
    assert "only available on lab pools" in r.json()["violations"][0]["remedy"]
    # A name that merely looks like a candidate is judged by its record (stable here).
    r = w.request("imager", image=catalogue_image("debian-12:candidate", "stable"))
    assert r.status_code == 409 and r.json()["code"] == "image.needs_bmc", r.text


def test_waiver_lifecycle(world: World) -> None:
    w = world
    w.enroll("node1")
    r = w.request(backup={"enabled": False})
    assert r.status_code == 422 and codes(r) == ["backup.required"]

    r = ask_waiver(w)
    assert r.status_code == 201, r.text
    waiver = r.json()
    assert waiver["status"] == "requested" and waiver["active"] is False
    assert waiver["tenant_id"] == w.ids["acme"] and waiver["requested_by"] == w.ids["cust_a"]
    wid = waiver["id"]
    # Scoping: the other tenant neither sees it nor may ask for acme.
    assert w.get("cust_b", f"/v1/waivers/{wid}").status_code == 404
    assert w.get("cust_b", "/v1/waivers").json()["total"] == 0
    assert w.get("cust_a", "/v1/waivers", params={"status": "requested"}).json()["total"] == 1
    assert w.get("auditor", "/v1/waivers").json()["total"] == 1
    r = ask_waiver(w, "cust_b")
    assert r.status_code == 422 and r.json()["code"] == "waiver.scope_unknown"
    # Customers can't decide, not even their own; a pending waiver does not count.
    r = w.post("cust_a", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(7)})
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    assert w.request(backup={"enabled": False}).status_code == 422
    # Expiry is mandatory and bounded by policy.waiver_max_days (90).
    for body, code in (({}, "waiver.expiry_missing"), ({"expires_at": in_days(91)}, "waiver.expiry_too_far"),
                       ({"expires_at": in_days(-1)}, "waiver.expiry_not_in_future")):
        r = w.post("operator", f"/v1/waivers/{wid}/approve", body)
        assert r.status_code == 422 and r.json()["code"] == "waiver.invalid", r.text
        assert codes(r) == [code] and r.json()["hint"]
    assert w.get("operator", f"/v1/waivers/{wid}").json()["status"] == "requested"

    r = w.post("operator", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(7), "note": "until the store"})
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["status"] == "approved" and approved["active"] is True
    assert approved["decided_by"] == w.ids["operator"] and approved["decision_note"] == "until the store"
    assert w.post("admin", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(7)}).json()["code"] == \
        "waiver.not_pending"

    # The waived violation no longer blocks; the others still do, and say what was waived.
    r = w.request(backup={"enabled": False}, raid_level="0")
    assert r.status_code == 422 and codes(r) == ["raid.required"] and r.json()["waived"] == ["backup.required"]
    r = w.request(backup={"enabled": False})
    assert r.status_code == 202, r.text
    w.wait_job(r.json()["job_ids"][0])
    waived = audit(w, "guardrails.waived")
    assert len(waived) == 1 and waived[0]["after"]["codes"] == ["backup.required"]

    # Expired (moved into the past in the database): no longer counts.
    with session_scope() as s:
        s.execute(update(Waiver).where(Waiver.id == wid).values(expires_at=utcnow() - timedelta(minutes=1)))
        s.commit()
    assert w.get("cust_a", f"/v1/waivers/{wid}").json()["active"] is False
    r = w.request(backup={"enabled": False})
    assert r.status_code == 422 and codes(r) == ["backup.required"]

    # A second waiver, approved then revoked: revocation takes effect at once.
    wid2 = ask_waiver(w).json()["id"]
    assert w.post("admin", f"/v1/waivers/{wid2}/approve", {"expires_at": in_days(30)}).status_code == 200
    assert w.request(backup={"enabled": False}).status_code == 409  # admitted; node1 is taken
    r = w.post("operator", f"/v1/waivers/{wid2}/revoke", {"note": "store is live"})
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["active"] is False
    assert w.request(backup={"enabled": False}).status_code == 422
    assert w.post("operator", f"/v1/waivers/{wid2}/revoke").json()["code"] == "waiver.not_approved"

    # A third, rejected.
    wid3 = ask_waiver(w).json()["id"]
    r = w.post("operator", f"/v1/waivers/{wid3}/reject", {"note": "fix it instead"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert w.post("operator", f"/v1/waivers/{wid3}/approve", {"expires_at": in_days(1)}).status_code == 409

    # Every step audited, with who and what.
    assert {e["object_id"] for e in audit(w, "waiver.request")} == {str(wid), str(wid2), str(wid3)}
    approvals = audit(w, "waiver.approve")
    assert {(e["object_id"], e["actor_name"]) for e in approvals} == {(str(wid), "operator"), (str(wid2), "admin")}
    assert all(e["before"]["status"] == "requested" and e["after"]["expires_at"] for e in approvals)
    assert [e["object_id"] for e in audit(w, "waiver.revoke")] == [str(wid2)]
    assert [e["object_id"] for e in audit(w, "waiver.reject")] == [str(wid3)]


def test_self_approval_and_approver_roles(sqlite_world: World) -> None:
    w = sqlite_world
    host = w.enroll("node1")
    # Operators may ask too (e.g. a degraded array while a disk is on order), but never approve their own.
    r = ask_waiver(w, "operator", code="raid.degraded", scope=f"host:{host['id']}")
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    r = w.post("operator", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(3)})
    assert r.status_code == 403 and r.json()["code"] == "waiver.self_approval", r.text
    assert "another operator or admin" in r.json()["hint"]
    assert w.get("operator", f"/v1/waivers/{wid}").json()["status"] == "requested"
    assert w.post("admin", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(3)}).status_code == 200

    # The policy can narrow who approves: then an operator is refused although the route allows it.
    assert put(w, "admin", "/v1/policy", {"waiver_approver_roles": ["admin"]}).status_code == 200
    wid2 = ask_waiver(w).json()["id"]
    r = w.post("operator", f"/v1/waivers/{wid2}/approve", {"expires_at": in_days(3)})
    assert r.status_code == 403 and r.json()["code"] == "waiver.approver_not_authorized", r.text
    assert w.post("admin2", f"/v1/waivers/{wid2}/approve", {"expires_at": in_days(3)}).status_code == 200
    assert [e["actor_name"] for e in audit(w, "waiver.approve")] == ["admin2", "admin"]


def test_bad_waiver_requests_are_422_and_write_nothing(sqlite_world: World) -> None:
    w = sqlite_world
    host = w.enroll("node1")
    cases = [
        ({"code": "firewall.management_port_open_to_world"}, "waiver.code_not_waivable"),
        ({"code": "quota.exceeded"}, "waiver.code_not_waivable"),
        ({"code": "backup.nonsense"}, "waiver.unknown_code"),
        ({"justification": "pls"}, "waiver.justification_too_short"),
        ({"justification": "a" * 40}, "waiver.justification_too_short"),
        ({"scope": "planet:earth"}, "waiver.scope_invalid"),
    ]
    for change, code in cases:
        body = {"code": "backup.required", "scope": "tenant:acme", "justification": JUSTIFICATION} | change
        r = w.post("cust_a", "/v1/waivers", body)
        assert r.status_code == 422 and r.json()["code"] == "waiver.invalid", (change, r.text)
        assert code in codes(r) and r.json()["hint"], (change, r.json())
    r = w.post("cust_a", "/v1/waivers", {"code": "nope", "scope": "nope", "justification": "x"})
    assert sorted(codes(r)) == ["waiver.justification_too_short", "waiver.scope_invalid", "waiver.unknown_code"]
    assert "backup.required" in r.json()["hint"]  # the unknown-code remedy lists the waivable codes
    # Scopes must exist and be the asker's: a host not allocated to acme, unknown ids, other tenants.
    for scope in (f"host:{host['id']}", "host:999", "request:999", "tenant:globex", "tenant:nope"):
        r = ask_waiver(w, scope=scope)
        assert r.status_code == 422 and r.json()["code"] == "waiver.scope_unknown", (scope, r.text)
    assert ask_waiver(w, scope="host:abc").json()["code"] == "waiver.scope_invalid"
    assert ask_waiver(w, "auditor").status_code == 403
    assert rows(Waiver) == (0,) and audit(w, "waiver.request") == []


def test_quota(world: World) -> None:
    acme = world.ids["acme"]
    assert put(world, "operator", f"/v1/tenants/{acme}/quota", {"quota": {"default": 1}}).status_code == 403
    assert put(world, "admin", "/v1/tenants/999/quota", {"quota": {}}).status_code == 404
    assert put(world, "admin", f"/v1/tenants/{acme}/quota", {"quota": {"default": -1}}).status_code == 422
    r = put(world, "admin", f"/v1/tenants/{acme}/quota", {"quota": {"default": 1}})
    assert r.status_code == 200 and r.json()["quota"] == {"default": 1}, r.text
    entry = audit(world, "tenant.quota")[0]
    assert entry["before"] == {"quota": {}} and entry["after"] == {"quota": {"default": 1}}

    world.enroll("node1")
    world.enroll("node2")
    first = world.request()
    assert first.status_code == 202, first.text
    r = world.request()
    assert r.status_code == 422 and codes(r) == ["quota.exceeded"], r.text
    v = r.json()["violations"][0]
    assert "uses 1 of 1 hosts in pool 'default'" in v["message"] and "make 2" in v["message"]
    assert "1 of 1" in r.json()["detail"] and v["waivable"] is False
    assert "raise the quota" in v["remedy"] and "at least 2" in v["remedy"]
    # A pool missing from a non-empty quota has quota 0; quota and policy violations come together.
    r = world.request(pool="gpu", raid_level="0")
    assert r.status_code == 422 and sorted(codes(r)) == ["quota.exceeded", "raid.required"]
    assert "no quota for pool 'gpu'" in r.json()["detail"]
    # globex has no quota at all: unlimited.
    other = world.request("cust_b")
    assert other.status_code == 202, other.text
    # Raising the quota lets the second request through.
    assert put(world, "admin", f"/v1/tenants/{acme}/quota", {"quota": {"default": 2}}).status_code == 200
    r = world.request()
    assert r.status_code == 409 and r.json()["code"] == "capacity.insufficient", r.text  # admitted; no host left
    for job_id in first.json()["job_ids"] + other.json()["job_ids"]:
        assert world.wait_job(job_id)["status"] == "succeeded"


def test_lease_extension(world: World) -> None:
    w = world
    w.enroll("node1")
    req = w.request(lease_hours=2).json()
    rid = req["id"]
    expires = parse_iso(req["lease_expires_at"])
    assert expires is not None
    r = w.post("cust_a", f"/v1/requests/{rid}/extend", {"hours": 3})
    assert r.status_code == 200, r.text
    lease = r.json()
    assert lease["extensions_used"] == 1 and lease["max_extensions"] == 3
    assert parse_iso(lease["lease_expires_at"]) == expires + timedelta(hours=3)
    assert parse_iso(w.get("cust_a", f"/v1/requests/{rid}").json()["lease_expires_at"]) == \
        expires + timedelta(hours=3)
    # Over the policy: 720 hours ahead at most; invalid hours; both listed together.
    r = w.post("cust_a", f"/v1/requests/{rid}/extend", {"hours": 800})
    assert r.status_code == 422 and codes(r) == ["lease.too_long"], r.text
    assert "Extend by at most 715 hours" in r.json()["violations"][0]["remedy"]  # 720h - 5h
    r = w.post("operator", f"/v1/requests/{rid}/extend", {"hours": 0})
    assert r.status_code == 422 and codes(r) == ["lease.invalid_hours"]
    assert w.post("cust_b", f"/v1/requests/{rid}/extend", {"hours": 1}).status_code == 404
    assert w.post("auditor", f"/v1/requests/{rid}/extend", {"hours": 1}).status_code == 403
    assert w.post("cust_a", f"/v1/requests/{rid}/extend", {"hours": "x"}).status_code == 422
    # Extensions are counted: with the policy allowing 2, the third is refused.
    assert put(w, "operator", "/v1/policy", {"max_lease_extensions": 2}).status_code == 200
    assert w.post("admin", f"/v1/requests/{rid}/extend", {"hours": 1}).status_code == 200
    r = w.post("cust_a", f"/v1/requests/{rid}/extend", {"hours": 1})
    assert r.status_code == 422 and codes(r) == ["lease.too_many_extensions"]
    entries = audit(w, "request.lease_extend")
    assert [(e["actor_name"], e["after"]["extensions_used"]) for e in entries] == [("admin", 2), ("cust_a", 1)]
    assert entries[-1]["before"]["lease_expires_at"] == iso(expires)


def test_expire_leases_warns_once_then_releases(world: World) -> None:
    from provisioner.store.config import get_settings
    from workers.leases import expire_leases

    w = world
    host = w.enroll("node1")
    req = w.request(lease_hours=24).json()
    rid = req["id"]
    assert w.wait_job(req["job_ids"][0])["status"] == "succeeded"

    def set_expiry(minutes: float) -> str:
        at = (utcnow() + timedelta(minutes=minutes)).replace(microsecond=0)
        with session_scope() as s:
            s.execute(update(HostRequest).where(HostRequest.id == rid).values(lease_expires_at=at))
            s.commit()
        return iso(at) or ""

    def warnings(at: str) -> list[dict[str, Any]]:
        return [e for e in audit(w, "lease.warning") if e["after"]["lease_expires_at"] == at]

    settings = get_settings()
    far = set_expiry(24 * 60)
    expire_leases(settings)
    assert warnings(far) == []  # not within the warning window (60 min)
    soon = set_expiry(10)
    expire_leases(settings)
    expire_leases(settings)
    warned = warnings(soon)
    assert len(warned) == 1, warned  # once per expiry time
    assert warned[0]["actor_name"] == "lease-expiry" and warned[0]["object_id"] == str(rid)
    assert warned[0]["tenant_id"] == w.ids["acme"] and 0 < warned[0]["after"]["minutes_left"] <= 10
    assert w.get("cust_a", f"/v1/requests/{rid}").json()["status"] == "ready"

    set_expiry(-1)
    expire_leases(settings)
    expire_leases(settings)  # idempotent: already releasing
    r = w.get("cust_a", f"/v1/requests/{rid}").json()
    assert r["status"] in ("releasing", "released"), r
    expired = audit(w, "lease.expired")
    assert len(expired) == 1 and expired[0]["actor_name"] == "lease-expiry" and expired[0]["object_id"] == str(rid)
    assert expired[0]["before"] == {"status": "ready"} and "lease expired" in expired[0]["after"]["reason"]
    release_job = max(r["job_ids"])
    with session_scope() as s:
        assert s.get(Job, release_job).kind == "release"
    assert w.wait_job(release_job)["status"] == "succeeded"
    assert w.get("cust_a", f"/v1/requests/{rid}").json()["status"] == "released"
    h = w.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "available" and h["tenant_id"] is None


def test_policy_read_and_write(sqlite_world: World) -> None:
    w = sqlite_world
    r = w.get("cust_a", "/v1/policy")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["version"] == 0 and doc["policy"]["max_open_ports"] == 16 and doc["policy"]["waiver_max_days"] == 90
    assert doc["codes"]["backup.required"]["waivable"] is True
    assert doc["codes"]["firewall.management_port_open_to_world"]["waivable"] is False
    assert put(w, "cust_a", "/v1/policy", {"max_open_ports": 2}).status_code == 403
    assert put(w, "auditor", "/v1/policy", {"max_open_ports": 2}).status_code == 403

    bad = {"max_open_ports": "many", "waiver_max_days": 0, "colour": "red", "raid_default_min_level": "0",
           "backup_retention_days_min": 400}
    r = put(w, "operator", "/v1/policy", bad)
    assert r.status_code == 422 and r.json()["code"] == "policy.invalid", r.text
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"max_open_ports", "waiver_max_days", "colour", "raid_default_min_level",
                      "backup_retention_days_max"}, r.json()["errors"]
    assert all(e["message"] for e in r.json()["errors"]) and "hint" in r.json()
    assert put(w, "operator", "/v1/policy", [1, 2]).status_code == 422
    assert w.get("cust_a", "/v1/policy").json()["version"] == 0 and audit(w, "policy.update") == []

    r = put(w, "operator", "/v1/policy", {"max_open_ports": 2})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["version"] == 1 and doc["policy"]["max_open_ports"] == 2 and doc["updated_by_name"] == "operator"
    assert doc["policy"]["backup_required"] is True  # partial PUT: the rest stays
    entry = audit(w, "policy.update")[0]
    assert entry["before"]["max_open_ports"] == 16 and entry["after"]["max_open_ports"] == 2
    assert entry["after"]["changed"] == ["max_open_ports"] and entry["after"]["version"] == 1
    # Same values again: no new version, no audit entry.
    assert put(w, "admin", "/v1/policy", {"max_open_ports": 2}).json()["version"] == 1
    assert len(audit(w, "policy.update")) == 1
    # Admission uses the new policy at once.
    ports = [{"port": p, "sources": ["10.0.0.0/8"]} for p in (80, 443, 8080)]
    r = w.request(firewall_ports=ports)
    assert r.status_code == 422 and codes(r) == ["firewall.too_many_ports"]
    assert "at most 2" in r.json()["detail"]
