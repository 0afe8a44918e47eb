"""Rendering dashboard pages: the templates, their filters, and `page()`, which hands every page the
signed-in principal and the session's CSRF token (for the forms it shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from provisioner.api.deps import Principal
from provisioner.core.review_markdown import pct
from provisioner.core.timeutil import iso

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["iso"] = iso
templates.env.filters["secs"] = lambda v: "-" if v is None else f"{v:,.1f} s"
templates.env.filters["pct"] = lambda v, d=1: pct(v, d)
templates.env.filters["burn"] = lambda v: "-" if v is None else f"{v:.2f}x"


def page(request: Request, name: str, p: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    # `csrf` goes into every form that changes something (sessions.form_principal checks it).
    return templates.TemplateResponse(request, name, {"me": p, "csrf": getattr(request.state, "csrf", ""), **ctx},
                                      status_code=status)
