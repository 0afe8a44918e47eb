"""The customer's forms: request a host (the API's POST /v1/requests: its refusals read on the page),
see the request, extend its lease, release it; another tenant's request answers not found."""

from __future__ import annotations

import re

from tests.integration.harness import PUBKEY, World
from tests.integration.test_dashboard import page_csrf, signed_in


def test_request_form_shows_refusals_and_creates_a_request(sqlite_world: World) -> None:
    w = sqlite_world
    a = signed_in(w, "cust_a")
    assert 'id="request-form"' in a.get("/ui/requests/new").text
    form = {"ssh_public_key": PUBKEY, "csrf": page_csrf(a, "/ui/requests/new")}
    # Malformed input: every field's problem listed, nothing stored.
    r = a.post("/ui/requests", data=form | {"count": "0", "labels": "rack", "ssh_public_key": "nope"})
    assert r.status_code == 422 and "The form has errors" in r.text
    assert "count: " in r.text and "labels, line 1: write key=value" in r.text and "ssh_public_key: " in r.text
    # A guardrail refusal: the API's detail, every violation with its remedy, the hint.
    r = a.post("/ui/requests", data=form | {"lease_hours": "1000"})
    assert r.status_code == 422 and "Refused:" in r.text and "lease.too_long" in r.text
    assert "exceeds the maximum of 720" in r.text and "extend later if needed" in r.text
    assert 'value="1000"' in r.text  # the form keeps what was typed
    # No host to give: the API's 409, as a message.
    r = a.post("/ui/requests", data=form)
    assert r.status_code == 409 and "capacity.insufficient" in r.text
    assert w.get("cust_a", "/v1/requests").json()["total"] == 0
    # An auditor may not request: refused on the page, nothing stored.
    au = signed_in(w, "auditor")
    assert au.get("/ui/requests/new").status_code == 403
    r = au.post("/ui/requests", data=form | {"csrf": page_csrf(au)})
    assert r.status_code == 403 and "may not request hosts" in r.text

    w.enroll("node1", labels={"rack": "r1"})
    r = a.post("/ui/requests", data=form | {"labels": "rack=r1", "min_cpus": "1", "lease_hours": "24"},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    [req] = w.get("cust_a", "/v1/requests").json()["items"]
    assert r.headers["location"] == f"/ui/jobs/{req['job_ids'][0]}"  # where progress shows live
    assert req["constraints"]["labels"] == {"rack": "r1"} and req["constraints"]["min_cpus"] == 1
    assert req["lease_expires_at"] is not None
    [entry] = w.get("admin", "/v1/audit", params={"action": "request.create"}).json()["items"]
    assert entry["actor_name"] == "cust_a"
    assert w.wait_job(req["job_ids"][0])["status"] == "succeeded"

    page = a.get(f"/ui/requests/{req['id']}").text
    assert 'id="release"' in page and 'id="extend"' in page and "ready" in page
    assert "none (the installed OS)" in page  # no image asked for: the host keeps its OS
    csrf = page_csrf(a, f"/ui/requests/{req['id']}")
    r = a.post(f"/ui/requests/{req['id']}/extend", data={"hours": "800", "csrf": csrf})
    assert r.status_code == 200 and re.search(r'id="note">the lease extension violates 1 guardrail', r.text)
    r = a.post(f"/ui/requests/{req['id']}/extend", data={"hours": "2", "csrf": csrf})
    assert 'id="done"' in r.text and "Lease extended by 2 h (extension 1 of 3)" in r.text
    # Another tenant: not found, and its forms change nothing.
    b = signed_in(w, "cust_b")
    assert b.get(f"/ui/requests/{req['id']}").status_code == 404
    assert f"/ui/requests/{req['id']}" not in b.get("/ui/requests").text
    r = b.post(f"/ui/requests/{req['id']}/release", data={"csrf": page_csrf(b)})
    assert r.status_code == 404
    assert w.get("cust_a", f"/v1/requests/{req['id']}").json()["status"] == "ready"

    r = a.post(f"/ui/requests/{req['id']}/release", data={"csrf": csrf})
    assert "Release started: the request is releasing" in r.text
    assert 'id="release"' not in r.text
    r = a.post(f"/ui/requests/{req['id']}/release", data={"csrf": csrf})
    assert re.search(r'id="note">request \d+ is (releasing|released)', r.text)
    assert [e["actor_name"] for e in w.get("admin", "/v1/audit", params={"action": "request.release"})
            .json()["items"]] == ["cust_a"]
