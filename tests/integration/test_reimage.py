"""POST /v1/requests/{id}/reimage through the real service (SQLite and PostgreSQL): accepted for a
ready request whose hosts were enrolled by their BMC, refused with a clear problem otherwise, nothing
written when refused; and where hosts and requests go when a reimage job ends (settle)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from provisioner.core.timeutil import utcnow
from provisioner.services.reimage import reimage_request
from provisioner.services.release import NotReleasable, release_request_hosts
from provisioner.services.settle import settle
from provisioner.store.db import session_scope
from provisioner.store.image_models import Image
from provisioner.store.migrate import upgrade
from provisioner.store.models import AuditEntry, Host, HostRequest, Job, Tenant, User
from tests.integration.harness import World
from workers.leases import Lease, lease_actions

OLD, NEW = "deb12-v1", "deb12-v2"
# name -> (channel, flagged, stored): the catalogue every test here starts from
CATALOGUE = {OLD: ("stable", False, True), NEW: ("stable", False, True), "deb13-rc": ("candidate", False, True),
             "deb11": ("deprecated", False, True), "deb12-bad": ("stable", True, True),
             "deb10": ("retired", False, False)}


def add_images(s: Session) -> None:
    for name, (channel, flagged, stored) in CATALOGUE.items():
        s.add(Image(name=name, version=name.rsplit("-", 1)[-1], os_name="Debian", os_version="12", format_in="raw",
                    channel=channel, size=1 << 20, sha256="0" * 64, stored_path=f"{name}.raw" if stored else None,
                    published_by="test", flagged=flagged, flag_reason="bad bytes" if flagged else None))


def add_ready_request(s: Session, tenant_id: int, user_id: int, hosts: list[tuple[str, str]]) -> tuple[int, list[int]]:
    """A handed-over request with hosts (name, driver) in state active, as a provision leaves them."""
    now = utcnow()
    req = HostRequest(tenant_id=tenant_id, requested_by=user_id, image=OLD, count=len(hosts), status="ready",
                      params={"raid_level": "1"}, ready_at=now, lease_expires_at=now + timedelta(days=3))
    s.add(req)
    s.flush()
    ids = []
    for name, driver in hosts:
        h = Host(name=name, address="192.0.2.10", driver=driver, state="active", tenant_id=tenant_id,
                 request_id=req.id, bmc_url="https://192.0.2.1:8000/redfish/v1/Systems/1" if driver == "redfish"
                 else None)
        s.add(h)
        s.flush()
        ids.append(h.id or 0)
    s.commit()
    return req.id or 0, ids


@dataclass
class Setup:
    bm: int  # a ready request with two hosts enrolled by their BMC
    bm_hosts: list[int]
    ssh: int  # a ready request whose host was enrolled over SSH
    other: int  # globex's ready bare-metal request


def setup(w: World) -> Setup:
    with session_scope() as s:
        add_images(s)
        s.commit()
        bm, bm_hosts = add_ready_request(s, w.ids["acme"], w.ids["cust_a"], [("bm1", "redfish"), ("bm2", "redfish")])
        ssh, _ = add_ready_request(s, w.ids["acme"], w.ids["cust_a"], [("ssh1", "static")])
        other, _ = add_ready_request(s, w.ids["globex"], w.ids["cust_b"], [("bm3", "redfish")])
    return Setup(bm, bm_hosts, ssh, other)


def snapshot(request_id: int) -> tuple[Any, ...]:
    """What a refused reimage must leave as it was."""
    with session_scope() as s:
        req = s.get(HostRequest, request_id)
        assert req is not None
        hosts = tuple(s.exec(select(Host.state).where(Host.request_id == request_id).order_by(col(Host.id))).all())
        jobs = s.exec(select(func.count()).select_from(Job)).one()
        audits = s.exec(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "request.reimage")
                        ).one()
        return req.status, req.image, hosts, jobs, audits


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["detail"] and body.get("hint"), body
    return body


def test_reimage_accepted(world: World) -> None:
    w = world
    st_ = setup(w)
    r = w.post("cust_a", f"/v1/requests/{st_.bm}/reimage", {"image": NEW, "keep_data": True})
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["image"] == NEW and out["status"] == "reimaging" and out["ready_at"] is not None
    with session_scope() as s:
        jobs = list(s.exec(select(Job).where(Job.request_id == st_.bm, Job.kind == "reimage")).all())
        assert sorted(j.host_id for j in jobs) == sorted(st_.bm_hosts)  # every host of the request
        for j in jobs:
            assert j.params["image"] == NEW and j.params["keep_data"] is True and j.params["previous_image"] == OLD
            assert j.tenant_id == w.ids["acme"]
        assert len({j.params["round"] for j in jobs}) == 1
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "request.reimage")).one()
        assert entry.before == {"status": "ready", "image": OLD}
        assert entry.after is not None and entry.after["image"] == NEW and entry.after["keep_data"] is True
        assert sorted(entry.after["jobs"]) == sorted(j.id or 0 for j in jobs) and entry.actor_name == "cust_a"
        for h in s.exec(select(Host).where(col(Host.id).in_(st_.bm_hosts))).all():
            # provisioning while the job runs; here no BMC answers, so the job fails and the host with it
            assert h.state in ("provisioning", "failed") and h.tenant_id == w.ids["acme"] and h.request_id == st_.bm
    # No BMC at 192.0.2.1: the deploy fails at its first phase, and a failed reimage is never handed back.
    for j in jobs:
        end = w.wait_job(j.id or 0, timeout=180)
        assert end["status"] == "failed" and [ph["name"] for ph in end["phases"]][:1] == ["ramdisk-boot"], end
    req = w.get("cust_a", f"/v1/requests/{st_.bm}").json()
    assert req["status"] == "failed" and req["image"] == NEW
    for hid in st_.bm_hosts:
        h = w.get("operator", f"/v1/hosts/{hid}").json()
        assert h["state"] == "failed" and h["request_id"] == st_.bm
    # not ready any more: a second reimage is refused
    problem(w.post("cust_a", f"/v1/requests/{st_.bm}/reimage", {"image": OLD}), 409, "request.not_active")


def test_reimage_refusals(world: World) -> None:
    w = world
    st_ = setup(w)
    url = f"/v1/requests/{st_.bm}/reimage"
    before = snapshot(st_.bm)
    p = problem(w.post("cust_a", url, {"image": "debian-12"}), 422, "image.unknown")
    assert p["requestable"] == [OLD, NEW] and NEW in p["hint"] and "deb13-rc" not in p["hint"]
    problem(w.post("cust_a", url, {"image": "deb13-rc"}), 422, "image.channel_not_allowed")
    problem(w.post("operator", url, {"image": "deb13-rc"}), 422, "image.channel_not_allowed")
    problem(w.post("cust_a", url, {"image": "deb11"}), 422, "image.deprecated")
    problem(w.post("cust_a", url, {"image": "deb12-bad"}), 422, "image.flagged")
    problem(w.post("cust_a", url, {"image": "deb10"}), 422, "image.retired")
    problem(w.post("cust_a", url, {"image": NEW, "host_id": 999999}), 422, "request.host_not_in_request")
    problem(w.post("cust_a", url, {"image": NEW, "keep_data": "yes"}), 422, "request.invalid")
    # RBAC: another tenant's customer does not even learn the request exists; the imaging team may not
    problem(w.post("cust_b", url, {"image": NEW}), 404, "request.not_found")
    problem(w.post("imager", url, {"image": NEW}), 403, "auth.forbidden")
    assert snapshot(st_.bm) == before
    ssh_before = snapshot(st_.ssh)
    p = problem(w.post("cust_a", f"/v1/requests/{st_.ssh}/reimage", {"image": NEW}), 409, "host.reimage_needs_bmc")
    assert "ssh1" in p["detail"] and p["driver"] == "static"
    assert snapshot(st_.ssh) == ssh_before
    with session_scope() as s:
        req = s.get(HostRequest, st_.other)
        assert req is not None
        req.status = "provisioning"
        s.add(req)
        s.commit()
    problem(w.post("admin", f"/v1/requests/{st_.other}/reimage", {"image": NEW}), 409, "request.not_active")
    # an operator reimages any tenant's request, one host of it when asked
    r = w.post("operator", url, {"image": NEW, "keep_data": False, "host_id": st_.bm_hosts[1]})
    assert r.status_code == 202, r.text
    with session_scope() as s:
        jobs = list(s.exec(select(Job).where(Job.kind == "reimage")).all())
        assert [(j.host_id, j.params["keep_data"]) for j in jobs] == [(st_.bm_hosts[1], False)]
        untouched = s.get(Host, st_.bm_hosts[0])
        assert untouched is not None and untouched.state == "active"
    # Let the job end here: a worker still running it would carry on into the next test's database.
    assert w.wait_job(jobs[0].id or 0)["status"] == "failed"


# Surrounding whitespace is stripped (as for every string field), so " deb12-v2\n" is a good name.
BAD_IMAGES = st.one_of(st.sampled_from(["debian-12", "deb13-rc", "deb11", "deb12-bad", "deb10", "", " ", "a" * 129,
                                        "../etc", "deb12-v2/", "DEB12-V2"]),
                       st.text(max_size=40).filter(lambda t: t.strip() not in (OLD, NEW)))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=8)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=6)


@st.composite
def bad_bodies(draw: st.DrawFn) -> Any:
    """Bodies no reimage may accept: a refused image, or a good one with a bad other field."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return {"image": draw(BAD_IMAGES), "keep_data": draw(st.booleans())}
    if kind == 1:
        return {"image": NEW, "keep_data": draw(ANY_JSON.filter(lambda v: not isinstance(v, bool)))}
    if kind == 2:
        return {"image": NEW, "host_id": draw(st.one_of(st.integers(max_value=0), st.integers(min_value=1 << 31),
                                                        st.text(max_size=5), st.integers(900000, 999999)))}
    return draw(ANY_JSON.filter(lambda v: not (isinstance(v, dict) and isinstance(v.get("image"), str)
                                               and v["image"].strip() in (OLD, NEW))))


def test_bad_input_never_500_and_writes_nothing(sqlite_world: World) -> None:
    w = sqlite_world
    st_ = setup(w)
    before = snapshot(st_.bm)

    @given(body=bad_bodies(), who=st.sampled_from(["cust_a", "operator", "cust_b", "imager"]))
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(body: Any, who: str) -> None:
        r = w.post(who, f"/v1/requests/{st_.bm}/reimage", body)
        assert r.status_code in (400, 403, 404, 409, 422), (body, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert snapshot(st_.bm) == before, body

    run()


# --- settle: where hosts and the request go when reimage jobs end -------------------------------------

@pytest.fixture
def engine(bare_engine: Engine) -> Iterator[Engine]:
    upgrade(bare_engine)
    yield bare_engine


@dataclass(frozen=True)
class Who:
    user_id: int | None
    name: str
    role: str
    tenant_id: int | None
    request_id: str | None = None


def started_reimage(engine: Engine, n_hosts: int = 1) -> tuple[int, list[int], list[int]]:
    with Session(engine) as s:
        t = Tenant(name="acme")
        s.add(t)
        s.flush()
        u = User(name="c", role="customer", tenant_id=t.id)
        s.add(u)
        s.flush()
        add_images(s)
        rid, hosts = add_ready_request(s, t.id or 0, u.id or 0, [(f"bm{i}", "redfish") for i in range(n_hosts)])
        req = s.get(HostRequest, rid)
        assert req is not None
        jobs = reimage_request(s, req, Who(u.id, "c", "customer", t.id), image=NEW)
        s.commit()
        states = s.exec(select(Host.state).where(col(Host.id).in_(hosts))).all()
        assert set(states) == {"provisioning"} and req.status == "reimaging" and req.image == NEW
        return rid, hosts, jobs


def end(engine: Engine, job_id: int, status: str, *, started: bool = True) -> None:
    with Session(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        if started:
            job.status, job.started_at, job.worker_id = "running", utcnow(), "w"
            s.add(job)
            s.commit()
        assert settle(s, job, status, None if status == "succeeded" else "boom",
                      error_code=None if status == "succeeded" else "phase_failed")


def state(engine: Engine, rid: int, hosts: list[int]) -> tuple[str, str, list[str], list[int | None]]:
    with Session(engine) as s:
        req = s.get(HostRequest, rid)
        assert req is not None
        hs = [s.get(Host, h) for h in hosts]
        return req.status, req.image, [h.state for h in hs if h], [h.request_id for h in hs if h]


def test_settle_reimage_succeeded_hands_back(engine: Engine) -> None:
    rid, hosts, jobs = started_reimage(engine, 2)
    end(engine, jobs[0], "succeeded")
    assert state(engine, rid, hosts) == ("reimaging", NEW, ["active", "provisioning"], [rid, rid])
    end(engine, jobs[1], "succeeded")
    assert state(engine, rid, hosts) == ("ready", NEW, ["active", "active"], [rid, rid])
    with Session(engine) as s:
        req = s.get(HostRequest, rid)
        assert req is not None and req.lease_expires_at is not None and req.released_at is None


def test_settle_reimage_failed_is_never_handed_back(engine: Engine) -> None:
    rid, hosts, jobs = started_reimage(engine, 2)
    end(engine, jobs[0], "succeeded")
    end(engine, jobs[1], "failed")
    assert state(engine, rid, hosts) == ("failed", NEW, ["active", "failed"], [rid, rid])


def test_settle_reimage_cancelled_before_it_started_puts_everything_back(engine: Engine) -> None:
    rid, hosts, jobs = started_reimage(engine, 1)
    end(engine, jobs[0], "cancelled", started=False)
    assert state(engine, rid, hosts) == ("ready", OLD, ["active"], [rid])
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "request.reimage_aborted")).one()
        assert entry.before == {"status": "reimaging", "image": NEW}
        assert entry.after is not None and entry.after["image"] == OLD


def test_a_reimaging_request_is_not_released_until_its_jobs_end(engine: Engine) -> None:
    rid, hosts, jobs = started_reimage(engine, 1)
    with Session(engine) as s:
        req = s.get(HostRequest, rid)
        assert req is not None
        with pytest.raises(NotReleasable, match="is reimaging") as exc:
            release_request_hosts(s, req, actor_id=None, actor_name="lease-expiry")
        assert exc.value.hint is not None and "cancel running jobs first" in exc.value.hint
    assert lease_actions([Lease(rid, "reimaging", utcnow() - timedelta(hours=1))], set(), utcnow(),
                         timedelta(hours=1)) == ([], [])  # expired, left alone until the jobs end
    end(engine, jobs[0], "succeeded")
    assert state(engine, rid, hosts)[0] == "ready"


def test_settle_reimage_cancelled_while_running_fails_the_host(engine: Engine) -> None:
    rid, hosts, jobs = started_reimage(engine, 1)
    end(engine, jobs[0], "cancelled", started=True)
    assert state(engine, rid, hosts) == ("failed", NEW, ["failed"], [rid])


def test_dashboard_reimage_form(sqlite_world: World) -> None:
    from tests.integration.test_dashboard import page_csrf, signed_in

    w = sqlite_world
    st_ = setup(w)
    a = signed_in(w, "cust_a")
    page = a.get(f"/ui/requests/{st_.bm}").text
    assert 'id="reimage"' in page
    csrf = page_csrf(a, f"/ui/requests/{st_.bm}")
    r = a.post(f"/ui/requests/{st_.bm}/reimage", data={"image": "debian-12", "keep_data": "on", "csrf": csrf})
    assert 'id="note">image &#39;debian-12&#39; is not in the catalogue' in r.text, r.text
    assert NEW in r.text  # the hint lists what they can request
    assert snapshot(st_.bm)[3] == 0  # no job
    r = a.post(f"/ui/requests/{st_.bm}/reimage", data={"image": NEW, "csrf": csrf})  # box unticked
    assert f"Reimage to {NEW} started (wiping every disk): the request is reimaging" in r.text, r.text
    assert 'id="reimage"' not in r.text
    with session_scope() as s:
        jobs = list(s.exec(select(Job).where(Job.kind == "reimage")).all())
        assert {j.params["keep_data"] for j in jobs} == {False}
    b = signed_in(w, "cust_b")
    assert b.post(f"/ui/requests/{st_.bm}/reimage", data={"image": NEW, "csrf": page_csrf(b)}).status_code == 404
    for j in jobs:  # ended here, not in the next test's database
        w.wait_job(j.id or 0)
