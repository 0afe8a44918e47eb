"""`provisioner admin init`: the first admin and its token, printed once."""

from __future__ import annotations

from sqlmodel import Session, select

from provisioner.services import audit
from provisioner.services.tokens import issue_token
from provisioner.store.models import User


class AlreadyInitialised(Exception):
    pass


def init_admin(session: Session, name: str = "admin") -> str:
    if session.exec(select(User).where(User.role == "admin")).first() is not None:
        raise AlreadyInitialised("an admin exists already; ask it for a token (provisioner tokens create)")
    user = User(name=name, role="admin")
    session.add(user)
    session.flush()
    _, full = issue_token(session, user, "bootstrap", None)
    audit.record(session, actor_id=user.id, actor_name="bootstrap", action="admin.init", object_type="user",
                 object_id=user.id, after={"name": name, "role": "admin"})
    session.commit()
    return full
