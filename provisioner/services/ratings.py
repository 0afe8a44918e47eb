"""The customers' voice: a rating (1-5 and a comment) of a delivered request, once per request.

A rating of LOW_SCORE or less opens an escalation that stays in the operators' list until one of
them answers it (compare-and-set: two answers cannot both win). Every step is audited in its own
transaction. `summary` is what the service review reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from provisioner.core.errors import Conflict, Invalid, not_found
from provisioner.core.timeutil import utcnow
from provisioner.services import audit
from provisioner.store.models import HostRequest
from provisioner.store.notify_models import Rating

LOW_SCORE = 2
MAX_COMMENT = 2000
# Delivered: the hosts were handed over (ready_at is set when a request becomes ready).
RATEABLE = ("ready", "releasing", "released", "release_failed")


def rate(session: Session, req: HostRequest, *, score: int, comment: str, user_id: int, actor_name: str,
         request_id: str | None) -> Rating:
    """Record the rating; the caller has checked that the request is the user's tenant's. Commits."""
    if not 1 <= score <= 5:
        raise Invalid("rating.score_invalid", f"score {score} is not between 1 and 5", hint="rate from 1 (bad) to 5")
    if len(comment) > MAX_COMMENT:
        raise Invalid("rating.comment_too_long", f"the comment has {len(comment)} characters",
                      hint=f"keep it under {MAX_COMMENT} characters")
    if req.status not in RATEABLE or req.ready_at is None:
        raise Conflict("rating.not_delivered", f"request {req.id} was not delivered (it is {req.status})",
                       hint="rate a request once its hosts were handed over (status ready)", status_now=req.status)
    low = score <= LOW_SCORE
    r = Rating(request_id=req.id or 0, tenant_id=req.tenant_id, user_id=user_id, score=score, comment=comment,
               escalation="open" if low else None)
    session.add(r)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("rating.exists", f"request {req.id} was rated already",
                       hint=f"GET /v1/requests/{req.id}/rating shows the rating") from None
    audit.record(session, actor_id=user_id, actor_name=actor_name, action="request.rate", object_type="request",
                 object_id=req.id, tenant_id=req.tenant_id, after={"score": score, "rating_id": r.id},
                 request_id=request_id)
    if low:
        audit.record(session, actor_id=user_id, actor_name=actor_name, action="escalation.open",
                     object_type="rating", object_id=r.id, tenant_id=req.tenant_id,
                     after={"score": score, "request_id": req.id}, request_id=request_id)
    session.commit()
    return r


def for_request(session: Session, request_id: int) -> Rating | None:
    return session.exec(select(Rating).where(Rating.request_id == request_id)).first()


def answer(session: Session, rating_id: int, text: str, *, actor_id: int, actor_name: str,
           request_id: str | None) -> Rating:
    """Answer an open escalation (closing it). Commits."""
    if not text.strip():
        raise Invalid("escalation.answer_empty", "the answer is empty", hint="say what was done about it")
    r = session.get(Rating, rating_id)
    if r is None or r.escalation is None:
        raise not_found("escalation", rating_id)
    now = utcnow()
    res = session.exec(update(Rating).where(col(Rating.id) == rating_id, col(Rating.escalation) == "open")
                       .values(escalation="answered", answer=text, answered_by=actor_name, answered_at=now))
    if res.rowcount != 1:
        session.rollback()
        raise Conflict("escalation.answered", f"escalation {rating_id} was answered already",
                       hint="GET /v1/escalations?status=answered shows the answer")
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action="escalation.answer",
                 object_type="rating", object_id=rating_id, tenant_id=r.tenant_id, before={"escalation": "open"},
                 after={"escalation": "answered", "answer": text}, request_id=request_id)
    session.commit()
    session.refresh(r)
    return r


def summary(session: Session, *, since: datetime | None = None, until: datetime | None = None,
            tenant_id: int | None = None) -> dict[str, Any]:
    """Ratings for the service review: count, mean, the 1-5 distribution, low ones, open escalations."""
    q = select(Rating.score, func.count()).group_by(col(Rating.score))
    esc = select(func.count()).select_from(Rating).where(Rating.escalation == "open")
    if since is not None:
        q = q.where(col(Rating.created_at) >= since)
    if until is not None:
        q = q.where(col(Rating.created_at) < until)
    if tenant_id is not None:
        q = q.where(Rating.tenant_id == tenant_id)
        esc = esc.where(Rating.tenant_id == tenant_id)
    dist = {score: 0 for score in range(1, 6)}
    for score, n in session.exec(q).all():
        dist[score] = n
    count = sum(dist.values())
    return {
        "count": count,
        "mean": round(sum(s * n for s, n in dist.items()) / count, 2) if count else None,
        "distribution": dist,
        "low": sum(n for s, n in dist.items() if s <= LOW_SCORE),
        "open_escalations": session.exec(esc).one(),
    }
