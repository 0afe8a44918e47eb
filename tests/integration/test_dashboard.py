"""The web dashboard: sign-in with a token cookie, the API's scoping and permissions, real data."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.integration.harness import World


def login_csrf(c: TestClient) -> str:
    """The sign-in form's one-off CSRF value (also set as the prov_login cookie)."""
    m = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text)
    assert m, "no CSRF field on the sign-in form"
    return m.group(1)


def page_csrf(c: TestClient, path: str = "/ui") -> str:
    """The session's CSRF token, as a page's forms carry it."""
    m = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert m, f"no CSRF field on {path}"
    return m.group(1)


def sign_in(c: TestClient, token: str) -> None:
    r = c.post("/ui/login", data={"token": token, "csrf": login_csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text
    cookie = r.headers.get_list("set-cookie")[0]
    assert cookie.startswith("prov_session=") and token not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/;" in cookie
    assert "Secure" not in cookie  # plain http here; over https the cookie is Secure


def signed_in(w: World, who: str) -> TestClient:
    c = TestClient(w.client.app, base_url="http://testserver")
    sign_in(c, w.tokens[who])
    return c


def test_pages_need_a_valid_token(sqlite_world: World) -> None:
    c = TestClient(sqlite_world.client.app)
    for path in ("/ui", "/ui/hosts", "/ui/jobs/1", "/ui/requests", "/ui/requests/new", "/ui/requests/1"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login", path
    r = c.post("/ui/login", data={"token": "prov_nope_nope", "csrf": login_csrf(c)}, follow_redirects=False)
    assert r.status_code == 401 and "Not signed in" in r.text and "prov_session" not in r.headers.get("set-cookie", "")
    # The raw API token is no session: a cookie holding it signs nobody in.
    c.cookies.set("prov_session", sqlite_world.tokens["admin"], path="/")
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?reason=expired"


def test_revoked_token_signs_the_browser_out(sqlite_world: World) -> None:
    w = sqlite_world
    tok = w.post("admin", f"/v1/users/{w.ids['cust_a']}/tokens", {"name": "browser"}).json()
    c = TestClient(w.client.app)
    sign_in(c, tok["token"])
    assert c.get("/ui").status_code == 200
    assert w.client.delete(f"/v1/tokens/{tok['token_id']}", headers=w.h("admin")).status_code == 204
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and "reason=expired" in r.headers["location"]
    assert "expired" in c.get("/ui/login?reason=expired").text


def test_customer_sees_their_job_phases_slo_and_hosts_only(world: World) -> None:
    host = world.enroll("node1", labels={"rack": "<script>alert(1)</script>"})
    world.enroll("node2")
    job_id = world.request().json()["job_ids"][0]
    job = world.wait_job(job_id, who="cust_a")
    assert job["status"] == "succeeded"

    a = signed_in(world, "cust_a")
    page = a.get("/ui").text
    assert f'href="/ui/jobs/{job_id}"' in page
    slo = re.search(r'id="slo".*?</div>\s*</div>', page, re.S)
    assert slo and "100.0% met" in slo.group(0) and "1 of 1 within target" in slo.group(0)
    detail = a.get(f"/ui/jobs/{job_id}").text
    for phase in ("wipe", "raid", "firewall", "backup", "restore-verify", "handover"):
        assert f"<td>{phase}</td>" in detail
    assert 'http-equiv="refresh"' not in detail  # finished: no auto-refresh
    hosts_page = a.get("/ui/hosts").text
    assert "node1" in hosts_page and "node2" not in hosts_page  # node2 is not theirs
    assert "<script>alert(1)</script>" not in hosts_page and "&lt;script&gt;" in hosts_page
    assert host["id"]

    b = signed_in(world, "cust_b")
    r = b.get(f"/ui/jobs/{job_id}")
    assert r.status_code == 404 and "does not exist or is not visible" in r.text
    assert f'href="/ui/jobs/{job_id}"' not in b.get("/ui").text
    assert "node1" not in b.get("/ui/hosts").text

    op = signed_in(world, "operator")
    assert "node1" in op.get("/ui/hosts").text and "node2" in op.get("/ui/hosts").text
    assert f'href="/ui/jobs/{job_id}"' in op.get("/ui").text


def test_sign_out_clears_the_cookie(sqlite_world: World) -> None:
    c = signed_in(sqlite_world, "operator")
    r = c.post("/ui/logout", data={"csrf": page_csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and 'prov_session=""' in r.headers["set-cookie"]
    assert c.get("/ui", follow_redirects=False).status_code == 303


def test_running_job_page_follows_the_job_stream(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1", labels={"sleep": "3"})
    job_id = w.request().json()["job_ids"][0]
    w.wait_host(w.get("operator", f"/v1/jobs/{job_id}").json()["host_id"], lambda h: h["state"] == "provisioning")
    a = signed_in(w, "cust_a")
    page = a.get(f"/ui/jobs/{job_id}").text
    assert f'new EventSource("/ui/jobs/{job_id}/stream?after_seq=' in page
    seqs: list[int] = []
    kinds: list[str] = []
    with a.stream("GET", f"/ui/jobs/{job_id}/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            elif line.startswith("id: "):
                seqs.append(int(line[4:]))
            if kinds and kinds[-1] == "end" and line == "":
                break
    job = w.get("cust_a", f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and kinds[-1] == "end" and "job" in kinds
    assert seqs == list(range(1, job["event_count"] + 1))
    assert "EventSource" not in a.get(f"/ui/jobs/{job_id}").text  # finished: nothing to follow
    b = signed_in(w, "cust_b")
    r = b.get(f"/ui/jobs/{job_id}/stream")
    assert r.status_code == 404 and r.json()["code"] == "job.not_found"
    r = TestClient(w.client.app).get(f"/ui/jobs/{job_id}/stream", follow_redirects=False)
    assert r.status_code == 303


def test_customer_rates_from_the_job_page_and_operators_see_the_escalation(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1")
    req = w.request().json()
    job_id = req["job_ids"][0]
    assert w.wait_job(job_id, timeout=400)["status"] == "succeeded"
    a = signed_in(w, "cust_a")
    assert 'id="rate"' in a.get(f"/ui/jobs/{job_id}").text
    b = signed_in(w, "cust_b")
    r = b.post(f"/ui/requests/{req['id']}/rate", data={"job_id": job_id, "score": 1, "csrf": page_csrf(b)},
               follow_redirects=False)
    assert r.status_code == 303 and "note=" in r.headers["location"]  # not theirs: refused, nothing written
    assert w.get("cust_a", f"/v1/requests/{req['id']}/rating").status_code == 404
    r = a.post(f"/ui/requests/{req['id']}/rate", data={"job_id": job_id, "score": 2, "comment": "<b>slow</b>"},
               follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text  # without the session's token: refused, nothing written
    assert w.get("cust_a", f"/v1/requests/{req['id']}/rating").status_code == 404
    r = a.post(f"/ui/requests/{req['id']}/rate",
               data={"job_id": job_id, "score": 2, "comment": "<b>slow</b>", "csrf": page_csrf(a)},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/jobs/{job_id}"
    page = a.get(f"/ui/jobs/{job_id}").text
    assert 'id="rate"' not in page and "Rated 2/5" in page and "&lt;b&gt;slow&lt;/b&gt;" in page
    op = signed_in(w, "operator")
    assert 'id="escalations"' in op.get("/ui").text and "&lt;b&gt;slow&lt;/b&gt;" in op.get("/ui").text
    assert 'id="escalations"' not in a.get("/ui").text
    rating = w.get("cust_a", f"/v1/requests/{req['id']}/rating").json()
    assert w.post("operator", f"/v1/escalations/{rating['id']}/answer", {"answer": "sorry"}).status_code == 200
    assert 'id="escalations"' not in op.get("/ui").text
