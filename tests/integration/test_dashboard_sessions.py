"""Dashboard sessions and CSRF: the cookie holds a random session id whose hash is the only thing
stored; sign-out, expiry, idleness and the token's revocation end it; every state-changing form
needs the session's CSRF token; sign-in and sign-out are audited."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from provisioner.core.timeutil import utcnow
from provisioner.store.db import session_scope
from provisioner.store.session_models import DashboardSession
from tests.integration.harness import World
from tests.integration.test_dashboard import login_csrf, page_csrf, sign_in, signed_in


def audit_actions(w: World, action: str) -> list[dict]:
    return w.get("admin", "/v1/audit", params={"action": action}).json()["items"]


def sessions() -> list[DashboardSession]:
    with session_scope() as s:
        return list(s.exec(select(DashboardSession).order_by(col(DashboardSession.id))).all())


def test_the_cookie_is_a_random_id_whose_hash_alone_is_stored_and_sign_out_revokes_it(sqlite_world: World) -> None:
    w = sqlite_world
    c = signed_in(w, "cust_a")
    sid = c.cookies.get("prov_session")
    assert sid and "prov_" not in sid and len(sid) >= 43
    [row] = sessions()
    assert row.session_hash == hashlib.sha256(sid.encode()).hexdigest() and sid not in row.session_hash
    assert row.user_id == w.ids["cust_a"] and not row.revoked
    assert row.token_id == w.tokens["cust_a"].split("_")[1]
    assert timedelta(hours=11) < row.expires_at - row.created_at <= timedelta(hours=12)
    [entry] = audit_actions(w, "session.create")
    assert entry["actor_name"] == "cust_a" and entry["object_id"] == str(row.id)
    assert entry["tenant_id"] == w.ids["acme"]

    r = c.post("/ui/logout", data={"csrf": page_csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?reason=signed_out"
    assert [s.revoked for s in sessions()] == [True]
    assert [e["object_id"] for e in audit_actions(w, "session.revoke")] == [str(row.id)]
    # The same id presented again (a copied cookie) no longer signs in.
    replay = TestClient(w.client.app)
    replay.cookies.set("prov_session", sid, path="/")
    r = replay.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?reason=expired"


def test_expired_idle_and_token_revoked_sessions_send_you_to_sign_in(sqlite_world: World) -> None:
    w = sqlite_world
    tok = w.post("admin", f"/v1/users/{w.ids['cust_a']}/tokens", {"name": "browser"}).json()
    clients = []
    for _ in range(3):
        c = TestClient(w.client.app)
        sign_in(c, tok["token"])
        assert c.get("/ui", follow_redirects=False).status_code == 200
        clients.append(c)
    expired, idle, other = (s.id for s in sessions())
    with session_scope() as s:
        past = utcnow() - timedelta(seconds=1)
        s.exec(update(DashboardSession).where(col(DashboardSession.id) == expired).values(expires_at=past))
        s.exec(update(DashboardSession).where(col(DashboardSession.id) == idle)
               .values(last_seen_at=utcnow() - timedelta(hours=2, seconds=1)))
        s.commit()
    for c in clients[:2]:
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?reason=expired"
        assert 'prov_session=""' in r.headers["set-cookie"]  # the dead cookie is cleared
    assert clients[2].get("/ui", follow_redirects=False).status_code == 200
    # Revoking the token ends the sessions signed in with it; the user's other sessions stay.
    mine = signed_in(w, "cust_a")
    assert w.client.delete(f"/v1/tokens/{tok['token_id']}", headers=w.h("admin")).status_code == 204
    r = clients[2].get("/ui/requests", follow_redirects=False)
    assert r.status_code == 303 and "reason=expired" in r.headers["location"]
    assert mine.get("/ui", follow_redirects=False).status_code == 200
    assert other


def test_forms_without_the_sessions_csrf_token_are_refused(sqlite_world: World) -> None:
    w = sqlite_world
    a = signed_in(w, "cust_a")
    b = signed_in(w, "cust_b")
    good, foreign = page_csrf(a), page_csrf(b)
    assert good != foreign
    form = {"ssh_public_key": "ssh-ed25519 AAAA x"}
    for data in (form, form | {"csrf": ""}, form | {"csrf": "0" * 64}, form | {"csrf": foreign}):
        for path in ("/ui/requests", "/ui/requests/1/release", "/ui/requests/1/extend", "/ui/requests/1/rate",
                     "/ui/logout"):
            r = a.post(path, data=data, follow_redirects=False)
            assert r.status_code == 403, (path, data, r.status_code)
            assert "Form refused" in r.text and "CSRF" in r.text and "reload the page" in r.text
    assert w.get("cust_a", "/v1/requests").json()["total"] == 0
    assert a.get("/ui", follow_redirects=False).status_code == 200  # still signed in: logout was refused too
    # Sign-in has its own one-off value (no session yet): without it, or another browser's, refused.
    c = TestClient(w.client.app)
    r = c.post("/ui/login", data={"token": w.tokens["cust_a"]}, follow_redirects=False)
    assert r.status_code == 403 and "prov_session" not in r.headers.get("set-cookie", "")
    other = TestClient(w.client.app)
    r = c.post("/ui/login", data={"token": w.tokens["cust_a"], "csrf": login_csrf(other)}, follow_redirects=False)
    assert r.status_code == 403
    assert len(sessions()) == 2


def test_over_https_the_cookies_are_secure(sqlite_world: World) -> None:
    c = TestClient(sqlite_world.client.app, base_url="https://testserver")
    assert "Secure" in c.get("/ui/login").headers["set-cookie"]
    r = c.post("/ui/login", data={"token": sqlite_world.tokens["cust_a"], "csrf": login_csrf(c)},
               follow_redirects=False)
    session_cookie = r.headers.get_list("set-cookie")[0]
    assert r.status_code == 303 and session_cookie.startswith("prov_session=") and "Secure" in session_cookie
