"""Dashboard sign-in: server-side sessions and CSRF protection.

Signing in with an API token opens a session (services/dashboard_sessions.py); the cookie
`prov_session` holds only its random id (HttpOnly, SameSite=Strict, Path=/, Secure over https).
Every page resolves the session, its token and its user in one query, so sign-out, expiry, idleness,
the token's revocation or the user's deactivation send the browser back to the sign-in page.

Every form that changes something carries the session's CSRF token (`form_principal` checks it
server-side; without it or with a wrong one the post is refused 403 with a page that says why). The
sign-in form, which has no session yet, is protected the same way by a one-off value kept in a
cookie of its own (double submit), so another site cannot sign a browser in under its own token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from provisioner.api.deps import Principal, principal_for_token
from provisioner.api.problems import Problem
from provisioner.core.permissions import Role
from provisioner.core.timeutil import utcnow
from provisioner.services import dashboard_sessions as sessions
from provisioner.store.db import get_engine, get_read_engine
from provisioner.store.secrets import parse_token
from provisioner.web.pages import page

router = APIRouter(prefix="/ui", include_in_schema=False)

COOKIE = "prov_session"
LOGIN_COOKIE = "prov_login"  # the sign-in form's one-off CSRF value
CSRF_FIELD = "csrf"


class SignInRequired(Exception):
    def __init__(self, reason: str = "") -> None:
        self.reason = reason


class CsrfRefused(Exception):
    """A state-changing form posted without the session's CSRF token, or with a wrong one."""


def install_handlers(app: Any) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        resp = RedirectResponse("/ui/login" + (f"?reason={exc.reason}" if exc.reason else ""), status_code=303)
        if exc.reason:
            resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return page(request, "error.html", None, status=403, title="Form refused",
                    message="This form was refused: it did not carry this session's security (CSRF) token. "
                            "Forms are only accepted from the dashboard's own pages: go back, reload the page "
                            "and submit it again.")


def _lookup(session_id: str) -> sessions.SignedIn | None:
    now = utcnow()
    with Session(get_read_engine()) as s:
        found = sessions.find_session(s, session_id, now)
    if found is not None and found.touch:
        with Session(get_engine()) as s:
            sessions.touch(s, found.session_row, now)
            s.commit()
    return found


async def ui_principal(request: Request) -> Principal:
    """The principal of the browser's session; SignInRequired (a redirect to sign-in) without one."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        raise SignInRequired()
    found = await run_in_threadpool(_lookup, session_id)
    if found is None:
        raise SignInRequired("expired")
    request.state.session_id = session_id
    request.state.csrf = sessions.csrf_token(session_id)
    return Principal(found.user_id, found.user_name, Role(found.role), found.tenant_id,
                     getattr(request.state, "request_id", None))


async def form_principal(request: Request) -> Principal:
    """ui_principal for a form that changes something: the post must carry the session's CSRF token."""
    p = await ui_principal(request)
    given = (await request.form()).get(CSRF_FIELD)
    if not isinstance(given, str) or not sessions.csrf_matches(request.state.session_id, given):
        raise CsrfRefused()
    return p


NOTES = {"expired": "Your session ended (signed out, expired, or its token was revoked): sign in again.",
         "signed_out": "Signed out."}


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, reason: str = "") -> HTMLResponse:
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not 20 <= len(nonce) <= 64:
        nonce = secrets.token_urlsafe(24)
    resp = page(request, "login.html", None, note=NOTES.get(reason, ""), login_csrf=nonce)
    resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path="/ui/login",
                    secure=request.url.scheme == "https", max_age=3600)
    return resp


def _open(token_id: str, p: Principal) -> str:
    with Session(get_engine()) as s:
        session_id = sessions.open_session(s, token_id=token_id, actor=p, now=utcnow())
        s.commit()
    return session_id


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form(max_length=512)] = "",
                csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not nonce or not csrf or not hmac.compare_digest(nonce.encode(), csrf.encode()):
        raise CsrfRefused()
    try:
        p = await principal_for_token(request, token)
    except Problem as exc:
        return page(request, "login.html", None, status=401, note=f"Not signed in: {exc.detail}.", login_csrf=nonce)
    parsed = parse_token(token.strip())
    assert parsed is not None  # principal_for_token accepted it
    session_id = await run_in_threadpool(_open, parsed[0], p)
    resp = RedirectResponse("/ui", status_code=303)
    resp.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https", max_age=int(sessions.SESSION_LIFETIME.total_seconds()))
    resp.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return resp


def _close(session_id: str, p: Principal) -> None:
    with Session(get_engine()) as s:
        sessions.close_session(s, session_id, actor=p)
        s.commit()


@router.post("/logout")
async def logout(request: Request) -> Response:
    p = await form_principal(request)
    await run_in_threadpool(_close, request.state.session_id, p)
    resp = RedirectResponse("/ui/login?reason=signed_out", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp
