"""List totals are counted up to a cap: beyond it `total` is the cap and `total_exact` false."""

from __future__ import annotations

from provisioner.api.pagination import COUNT_CAP
from provisioner.store.db import session_scope
from provisioner.store.models import AuditEntry
from tests.integration.harness import World


def test_total_is_capped_and_says_so(world: World) -> None:
    before = world.get("auditor", "/v1/audit", params={"limit": 1}).json()
    assert before["total_exact"] is True and before["total"] < COUNT_CAP
    with session_scope() as s:
        s.add_all(AuditEntry(actor_name="bench", action="bench.fill", object_type="none", object_id=str(i))
                  for i in range(COUNT_CAP + 5))
        s.commit()
    page = world.get("auditor", "/v1/audit", params={"limit": 3, "offset": 2}).json()
    assert (page["total"], page["total_exact"], len(page["items"])) == (COUNT_CAP, False, 3)
    # A filter that narrows below the cap counts exactly again.
    narrowed = world.get("auditor", "/v1/audit", params={"action": before["items"][0]["action"]}).json()
    assert narrowed["total_exact"] is True and 1 <= narrowed["total"] < COUNT_CAP
