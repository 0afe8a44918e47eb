"""The RBAC matrix: every endpoint × every role × own/foreign tenant, through the real API."""

from __future__ import annotations

from tests.integration.harness import PUBKEY, World

ROLES = ["admin", "operator", "auditor", "imager", "cust_a", "cust_b"]
ROLE_OF = {"admin": "admin", "operator": "operator", "auditor": "auditor", "imager": "imager",
           "cust_a": "customer", "cust_b": "customer"}
ALLOWED = {
    "me:read": {"admin", "operator", "auditor", "imager", "customer"},
    "tenants:read": {"admin", "operator", "auditor"},
    "tenants:write": {"admin"},
    "users:read": {"admin", "auditor"},
    "users:write": {"admin"},
    "tokens:write": {"admin"},
    "hosts:read": {"admin", "operator", "auditor", "imager", "customer"},
    "hosts:write": {"admin", "operator"},
    "requests:create": {"imager", "customer"},
    "requests:read": {"admin", "operator", "auditor", "imager", "customer"},
    "requests:release": {"admin", "operator", "imager", "customer"},
    "requests:reimage": {"admin", "operator", "customer"},
    "jobs:read": {"admin", "operator", "auditor", "imager", "customer"},
    "jobs:cancel": {"admin", "operator", "imager", "customer"},
    "audit:read": {"admin", "auditor"},
    "policy:read": {"admin", "operator", "auditor", "imager", "customer"},
    "policy:write": {"admin", "operator"},
    "waivers:request": {"admin", "operator", "imager", "customer"},
    "waivers:read": {"admin", "operator", "auditor", "imager", "customer"},
    "waivers:decide": {"admin", "operator"},
    "images:read": {"admin", "operator", "auditor", "imager", "customer"},
    "images:write": {"admin", "imager"},
    "metrics:read": {"admin", "operator", "auditor"},
    "reports:read": {"admin", "operator", "auditor", "customer"},
}
BOGUS = {"__not_a_field__": 1}


def test_rbac_matrix(sqlite_world: World) -> None:
    w = sqlite_world
    host = w.enroll("node1")
    req = w.request().json()
    job_id = req["job_ids"][0]
    w.wait_job(job_id)
    waiver = w.post("cust_a", "/v1/waivers", {"code": "backup.required", "scope": "tenant:acme",
                                              "justification": "restore store arrives next month, data replicated"})
    assert waiver.status_code == 201, waiver.text
    wv = waiver.json()["id"]
    # (method, path, permission, body, scoped object of tenant acme?, what an allowed role gets)
    # The last column is exact: an allowed role in its own tenant never sees 404, so a broken
    # own-tenant scope fails here. Bodies are deliberately invalid (422) so that nothing changes.
    ok, invalid = {200}, {422}
    cases = [
        ("GET", "/v1/me", "me:read", None, False, ok),
        ("GET", "/v1/tenants", "tenants:read", None, False, ok),
        ("POST", "/v1/tenants", "tenants:write", BOGUS, False, invalid),
        ("GET", "/v1/users", "users:read", None, False, ok),
        ("POST", "/v1/users", "users:write", BOGUS, False, invalid),
        ("POST", f"/v1/users/{w.ids['cust_a']}/tokens", "tokens:write", BOGUS, False, invalid),
        ("DELETE", "/v1/tokens/doesnotexist", "tokens:write", None, False, {404}),
        ("GET", "/v1/hosts", "hosts:read", None, False, ok),
        ("POST", "/v1/hosts", "hosts:write", BOGUS, False, invalid),
        ("GET", f"/v1/hosts/{host['id']}", "hosts:read", None, True, ok),
        ("POST", f"/v1/hosts/{host['id']}/commission", "hosts:write", None, True, {409}),  # it is active
        ("POST", f"/v1/hosts/{host['id']}/state", "hosts:write", BOGUS, True, invalid),
        ("POST", f"/v1/hosts/{host['id']}/compliance-check", "hosts:write", None, True, {202, 409}),
        ("GET", "/v1/compliance", "hosts:read", None, False, ok),
        ("POST", "/v1/requests", "requests:create", BOGUS, False, invalid),
        ("GET", "/v1/requests", "requests:read", None, False, ok),
        ("GET", f"/v1/requests/{req['id']}", "requests:read", None, True, ok),
        ("GET", "/v1/jobs", "jobs:read", None, False, ok),
        ("GET", f"/v1/jobs/{job_id}", "jobs:read", None, True, ok),
        ("GET", f"/v1/jobs/{job_id}/events", "jobs:read", None, True, ok),
        ("POST", f"/v1/jobs/{job_id}/cancel", "jobs:cancel", None, True, {409}),  # it has finished
        ("GET", "/v1/audit", "audit:read", None, False, ok),
        ("GET", "/v1/policy", "policy:read", None, False, ok),
        ("PUT", "/v1/policy", "policy:write", BOGUS, False, invalid),
        ("PUT", f"/v1/tenants/{w.ids['acme']}/quota", "tenants:write", BOGUS, False, invalid),
        ("POST", "/v1/waivers", "waivers:request", BOGUS, False, invalid),
        ("GET", "/v1/waivers", "waivers:read", None, False, ok),
        ("GET", f"/v1/waivers/{wv}", "waivers:read", None, True, ok),
        ("POST", f"/v1/waivers/{wv}/approve", "waivers:decide", BOGUS, True, invalid),
        ("POST", f"/v1/waivers/{wv}/reject", "waivers:decide", BOGUS, True, invalid),
        ("POST", f"/v1/waivers/{wv}/revoke", "waivers:decide", BOGUS, True, invalid),
        # A valid body (a name outside the catalogue: refused, nothing changes), so that another
        # tenant's customer meets the visibility check, not the body's validation.
        ("POST", f"/v1/requests/{req['id']}/reimage", "requests:reimage", {"image": "debian-12"}, True, invalid),
        ("POST", f"/v1/requests/{req['id']}/extend", "requests:release", {"hours": 1}, True, {409}),  # no lease
        ("GET", "/v1/images", "images:read", None, False, ok),
        ("POST", "/v1/images/register", "images:write", BOGUS, False, invalid),
        ("POST", "/v1/images/1/promote", "images:write", BOGUS, False, invalid),
        ("POST", "/v1/images/1/canary", "images:write", BOGUS, False, invalid),
        ("POST", "/v1/images/1/flag", "images:write", BOGUS, False, invalid),
        ("GET", "/metrics", "metrics:read", None, False, ok),
        ("GET", "/v1/slo", "reports:read", None, False, ok),
        ("GET", "/v1/review", "reports:read", None, False, ok),
        ("GET", "/v1/review/weekly", "reports:read", None, False, ok),
    ]
    assert {c[2] for c in cases} == set(ALLOWED), "every permission is exercised"
    wrong = []
    for method, path, perm, body, scoped, allowed_gets in cases:
        r = w.client.request(method, path, json=body)
        if r.status_code != 401 or r.json()["code"] != "auth.required":
            wrong.append((method, path, "anonymous", r.status_code))
        for who in ROLES:
            r = w.client.request(method, path, headers=w.h(who), json=body)
            assert r.headers["content-type"].startswith(("application/json", "text/plain")) or \
                r.headers["content-type"] == "application/problem+json", (path, r.headers)
            role = ROLE_OF[who]
            if role not in ALLOWED[perm]:
                expected = {403}
            elif scoped and who == "cust_b":
                expected = {404}  # another tenant's object: not even its existence is shown
            else:
                expected = allowed_gets
            if r.status_code not in expected:
                wrong.append((method, path, who, r.status_code, r.text[:200]))
            if r.status_code == 403:
                assert r.json()["code"] == "auth.forbidden" and r.json()["permission"] == perm
    assert not wrong, "\n".join(map(str, wrong))


def test_release_of_foreign_request_is_404_and_changes_nothing(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1")
    req = w.request().json()
    w.wait_job(req["job_ids"][0])
    r = w.post("cust_b", f"/v1/requests/{req['id']}/release")
    assert r.status_code == 404 and r.json()["code"] == "request.not_found"
    assert w.get("cust_a", f"/v1/requests/{req['id']}").json()["status"] == "ready"


def test_lists_are_tenant_scoped(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1")
    w.enroll("node2")
    a = w.request().json()
    b = w.request("cust_b", ssh_public_key=PUBKEY).json()
    for who, mine, theirs in (("cust_a", a, b), ("cust_b", b, a)):
        reqs = {r["id"] for r in w.get(who, "/v1/requests").json()["items"]}
        jobs = {j["id"] for j in w.get(who, "/v1/jobs").json()["items"]}
        hosts = {h["id"] for h in w.get(who, "/v1/hosts").json()["items"]}
        assert reqs == {mine["id"]} and jobs == set(mine["job_ids"]) and hosts == set(mine["host_ids"])
        assert theirs["id"] not in reqs
    assert {r["id"] for r in w.get("imager", "/v1/requests").json()["items"]} == {a["id"]}
    assert len(w.get("operator", "/v1/requests").json()["items"]) == 2


def test_revoked_and_malformed_tokens(sqlite_world: World) -> None:
    w = sqlite_world
    tok = w.post("admin", f"/v1/users/{w.ids['operator']}/tokens", {"name": "tmp"}).json()
    hdr = {"Authorization": f"Bearer {tok['token']}"}
    assert w.client.get("/v1/me", headers=hdr).status_code == 200
    assert w.client.delete(f"/v1/tokens/{tok['token_id']}", headers=w.h("admin")).status_code == 204
    r = w.client.get("/v1/me", headers=hdr)
    assert r.status_code == 401 and r.json()["code"] == "auth.token_expired"
    for bad in ("Bearer nonsense", "Bearer prov_x_y", "Basic abc", "Bearer "):
        r = w.client.get("/v1/me", headers={"Authorization": bad})
        assert r.status_code == 401 and r.json()["code"] in ("auth.invalid_token", "auth.required"), bad
