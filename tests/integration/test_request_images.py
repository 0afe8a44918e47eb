"""A request names a catalogue image the requester may use, or none: an unknown name is a 422
(`image.unknown`) listing what the requester can request, through the API, the dashboard's form
(the CLI's is in test_cli.py); images the requester may not use keep their own codes; nothing is
written for a refusal; a request without an image provisions the host without writing one."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlmodel import select

from provisioner.store.db import session_scope
from provisioner.store.image_models import Image
from provisioner.store.models import HostRequest, Job
from tests.integration.harness import PUBKEY, World, bare_metal_host
from tests.integration.test_dashboard import page_csrf, signed_in


def image(name: str, channel: str = "stable", *, flagged: bool = False, stored: bool = True) -> str:
    """A catalogue record (bytes "stored" unless told otherwise): only its fields decide admission."""
    with session_scope() as s:
        s.add(Image(name=name, version="1", os_name="debian", os_version="12", format_in="raw", channel=channel,
                    size=1, sha256="0" * 64, stored_path=f"{name}.raw" if stored else None, flagged=flagged,
                    published_by="imager"))
        s.commit()
    return name


def request_rows() -> tuple[int, int]:
    with session_scope() as s:
        return (s.exec(select(func.count()).select_from(HostRequest)).one(),
                s.exec(select(func.count()).select_from(Job)).one())


def small_catalogue() -> None:
    """Two stable images, one of each kind nobody may request, and a candidate (imagers, lab pools)."""
    image("zeta-stable")
    image("alpha-stable")
    image("cand", "candidate")
    image("old", "deprecated")
    image("gone", "retired")
    image("bad", flagged=True)
    image("empty", stored=False)


def test_unknown_image_is_refused_listing_what_the_requester_can_request(world: World) -> None:
    w = world
    small_catalogue()
    host = w.enroll("node1")
    before = request_rows()
    audits = w.get("auditor", "/v1/audit", params={"action": "request.create"}).json()["total"]

    r = w.request(image="debian-12")
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "image.unknown" and "'debian-12'" in body["detail"]
    assert body["requestable"] == ["alpha-stable", "zeta-stable"] and body["requestable_total"] == 2
    assert "alpha-stable, zeta-stable" in body["hint"] and "leave the image out" in body["hint"]
    # An imager on a lab pool may also request candidates: the list says so; on a production pool not.
    r = w.request("imager", image="debian-12", pool="lab")
    assert r.json()["requestable"] == ["alpha-stable", "cand", "zeta-stable"], r.text
    assert w.request("imager", image="debian-12").json()["requestable"] == ["alpha-stable", "zeta-stable"]

    # Nothing written: no request, no job, no audit entry, the host still available.
    assert request_rows() == before
    assert w.get("auditor", "/v1/audit", params={"action": "request.create"}).json()["total"] == audits
    assert w.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "available"


def test_images_the_requester_may_not_use_keep_their_own_codes(sqlite_world: World) -> None:
    w = sqlite_world
    small_catalogue()
    w.enroll("node1")
    before = request_rows()
    for name, code in (("cand", "image.channel_not_allowed"), ("old", "image.deprecated"),
                       ("gone", "image.retired"), ("bad", "image.flagged"), ("empty", "image.unavailable")):
        r = w.request(image=name)
        assert r.status_code == 422 and r.json()["code"] == code, (name, r.text)
    # An imager's candidate on a production pool: the guardrails' channel rule, as before.
    r = w.request("imager", image="cand")
    assert r.status_code == 422 and r.json()["code"] == "guardrails.violations", r.text
    assert [v["code"] for v in r.json()["violations"]] == ["image.channel_not_allowed"]
    assert request_rows() == before
    # A stable catalogue image is admitted, given a host enrolled by its BMC.
    bare_metal_host("bm1")
    r = w.request(image="alpha-stable")
    assert r.status_code == 202 and r.json()["image"] == "alpha-stable", r.text


def test_an_image_needs_a_host_enrolled_by_its_bmc(world: World) -> None:
    """An image is written only by the deploy ramdisk, booted through a BMC: an image request where
    every host is reached over SSH is refused (nothing written, the host still available); a host
    enrolled by its BMC takes image requests only, and a host reached over SSH requests without one."""
    w = world
    small_catalogue()
    ssh_host = w.enroll("node1")
    before = request_rows()
    audits = w.get("auditor", "/v1/audit", params={"action": "request.create"}).json()["total"]
    r = w.request(image="alpha-stable")
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "image.needs_bmc" and body["pool"] == "default" and body["ssh_hosts"] == 1, body
    assert "enrolled by its BMC" in body["detail"] and "--bmc-url" in body["hint"], body
    assert "leave the image out" in body["hint"], body
    # The vagrant pool's VMs come from the lab's box, with no BMC either (the canary: test_images_api).
    r = w.request(image="alpha-stable", pool="vagrant")
    assert r.status_code == 409 and r.json()["code"] == "image.needs_bmc", r.text
    assert request_rows() == before
    assert w.get("auditor", "/v1/audit", params={"action": "request.create"}).json()["total"] == audits
    assert w.get("operator", f"/v1/hosts/{ssh_host['id']}").json()["state"] == "available"

    bm = bare_metal_host("bm1")
    # A request without an image never gets the BMC host: it has no OS until a deploy writes one.
    r = w.request()
    assert r.status_code == 202, r.text
    job = w.get("operator", f"/v1/jobs/{r.json()['job_ids'][0]}").json()
    assert job["host_id"] == ssh_host["id"], job
    # The SSH host is taken now: a second request without an image finds no host, though the BMC one is free.
    r = w.request()
    assert r.status_code == 409 and r.json()["code"] == "capacity.insufficient", r.text
    # An image request goes to the BMC host; a second one finds it taken: capacity, not needs_bmc.
    r = w.request(image="alpha-stable")
    assert r.status_code == 202, r.text
    assert w.get("operator", f"/v1/jobs/{r.json()['job_ids'][0]}").json()["host_id"] == bm
    r = w.request(image="alpha-stable")
    assert r.status_code == 409 and r.json()["code"] == "capacity.insufficient", r.text


def test_the_list_is_bounded_and_sorted(sqlite_world: World) -> None:
    w = sqlite_world
    for n in range(25):
        image(f"img-{24 - n:02d}")
    body = w.request(image="nope").json()
    assert body["code"] == "image.unknown" and body["requestable_total"] == 25
    assert body["requestable"] == [f"img-{n:02d}" for n in range(20)]
    assert "(first 20 of 25)" in body["hint"]


def test_no_image_provisions_the_host_without_writing_one(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1")
    r = w.request()
    assert r.status_code == 202 and r.json()["image"] is None, r.text
    job = w.wait_job(r.json()["job_ids"][0])
    assert job["status"] == "succeeded", job
    assert "image" not in [p["name"] for p in job["phases"]], job["phases"]
    host = w.get("operator", f"/v1/hosts/{job['host_id']}").json()
    assert not (host["results"] or {}).get("image", {}).get("bytes_written"), host["results"]


def test_the_dashboard_form_shows_the_requestable_images(sqlite_world: World) -> None:
    w = sqlite_world
    small_catalogue()
    a = signed_in(w, "cust_a")
    form = {"ssh_public_key": PUBKEY, "csrf": page_csrf(a, "/ui/requests/new"), "image": "debian-12"}
    r = a.post("/ui/requests", data=form)
    assert r.status_code == 422 and "image.unknown" in r.text and "is not in the catalogue" in r.text
    assert 'id="requestable"' in r.text and "<code>alpha-stable</code>, <code>zeta-stable</code>" in r.text
    assert 'value="debian-12"' in r.text  # the form keeps what was typed
    assert w.get("cust_a", "/v1/requests").json()["total"] == 0


# Names the API's pattern accepts (so admission, not validation, answers) and any text at all.
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True)
# (None is left out: no image is a valid request.)
ANY = st.one_of(NAMES, st.text(max_size=140), st.integers(), st.lists(st.text(max_size=3), max_size=2))
CATALOGUE = {"zeta-stable", "alpha-stable", "cand", "old", "gone", "bad", "empty"}


def test_random_names_never_500_and_never_open_a_request(sqlite_world: World) -> None:
    w = sqlite_world
    small_catalogue()
    w.enroll("node1")
    before = request_rows()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=ANY.filter(lambda v: not (isinstance(v, str) and v in CATALOGUE)),
           who=st.sampled_from(["cust_a", "imager"]), pool=st.sampled_from(["default", "lab"]))
    def check(name: Any, who: str, pool: str) -> None:
        r = w.request(who, image=name, pool=pool)
        assert r.status_code == 422, (name, r.status_code, r.text)
        body = r.json()
        # Refused by admission, or before it by the body's schema (a NUL anywhere has its own code).
        assert body["code"] in ("image.unknown", "request.invalid", "request.nul_character"), body
        if body["code"] == "image.unknown":
            assert isinstance(name, str) and body["requestable"][0] == "alpha-stable"

    check()
    assert request_rows() == before
