"""Ratings of delivered requests and the escalations low ones open.

Customers and imagers rate their tenant's delivered requests (once each); operators, admins and
auditors list escalations; operators and admins answer them. Everything is audited.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import Field
from sqlmodel import col, select

from provisioner.api.bounds import IdFilter, PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import not_found
from provisioner.api.requests import visible_request
from provisioner.api.schemas import Out, Page, Strict, Timestamp
from provisioner.services import ratings
from provisioner.store.notify_models import Rating

router = APIRouter(tags=["ratings"])


class RatingIn(Strict):
    score: int = Field(ge=1, le=5, description="1 (bad) to 5 (excellent); 2 or less opens an escalation")
    comment: str = Field(default="", max_length=ratings.MAX_COMMENT)


class AnswerIn(Strict):
    answer: str = Field(min_length=1, max_length=4000, description="what was done about it (audited)")


class RatingOut(Out):
    id: int
    request_id: int
    tenant_id: int
    user_id: int
    score: int
    comment: str
    created_at: Timestamp
    escalation: str | None
    answer: str | None
    answered_by: str | None
    answered_at: Timestamp | None


@router.post("/v1/requests/{request_id}/rating", status_code=201, response_model=RatingOut,
             summary="Rate a delivered request (1-5 and a comment), once; 2 or less is an escalation")
def rate_request(request_id: PathId, body: RatingIn, p: Annotated[Principal, Depends(require("ratings:write"))],
                 s: DbSession) -> Rating:
    req = visible_request(s, p, request_id)
    return ratings.rate(s, req, score=body.score, comment=body.comment, user_id=p.user_id, actor_name=p.name,
                        request_id=p.request_id)


@router.get("/v1/requests/{request_id}/rating", response_model=RatingOut, summary="A request's rating")
def get_rating(request_id: PathId, p: Annotated[Principal, Depends(require("ratings:read"))], s: DbSession) -> Rating:
    visible_request(s, p, request_id)
    r = ratings.for_request(s, request_id)
    if r is None:
        raise not_found("rating", f"of request {request_id}")
    return r


@router.get("/v1/escalations", response_model=Page[RatingOut],
            summary="Low ratings: open ones stay here until an operator answers them (oldest first)")
def list_escalations(*, status: Literal["open", "answered"] | None = "open", pg: Paging,
                     tenant_id: IdFilter = None,
                     p: Annotated[Principal, Depends(require("escalations:read"))], s: DbSession) -> dict:
    q = select(Rating).where(col(Rating.escalation).is_not(None))
    if status is not None:
        q = q.where(Rating.escalation == status)
    if tenant_id is not None:
        q = q.where(Rating.tenant_id == tenant_id)
    items = s.exec(q.order_by(col(Rating.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": items, **page_meta(s, q, pg)}


@router.post("/v1/escalations/{rating_id}/answer", response_model=RatingOut,
             summary="Answer an open escalation (closes it; audited)")
def answer_escalation(rating_id: PathId, body: AnswerIn,
                      p: Annotated[Principal, Depends(require("escalations:answer"))], s: DbSession) -> Rating:
    return ratings.answer(s, rating_id, body.answer, actor_id=p.user_id, actor_name=p.name, request_id=p.request_id)
