"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
`provisioner serve` process (embedded worker, the engine-test phases over a local connection).

A customer signs in, is refused by a guardrail on the request form (a message on the page), requests
a host through the form, watches the job progress live (the job page's EventSource) to handover,
rates the delivery and releases the host; a form posted without the CSRF token is refused; another
tenant's pages answer not found. Screenshots go to test-output/browser/ (ignored by git; the path is
printed), also when the test fails. The test fails, never skips, when chromium or Playwright is
missing: scripts/install.sh installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.harness import PUBKEY, REPO, base_env
from tests.integration.procs import Api, Service, admin_token, customer, operator

OUT = REPO / "test-output" / "browser"
# Each EventSource message reaches Python with the browser's arrival time (ms since the epoch).
RECORD_SSE = """
(() => {
  const Orig = window.EventSource;
  function Recording(url, opts) {
    const es = new Orig(url, opts);
    es.addEventListener("event", (m) => window.__sseArrived(Date.now(), m.data));
    return es;
  }
  Recording.prototype = Orig.prototype;
  window.EventSource = Recording;
})();
"""


def chromium_path() -> str:
    path = os.environ.get("PROVISIONER_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Debian's chromium is not installed (scripts/install.sh installs it): "
                    "the browser test cannot run without it")
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Path]:
    out = OUT / request.node.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"\nscreenshots: {out}")
    yield out


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/ui/login")
    page.fill("input[name=token]", token)
    page.click("#sign-in")
    expect(page).to_have_url(url + "/ui")


@pytest.mark.timeout(900)
def test_customer_requests_watches_rates_and_releases_in_chromium(tmp_path: Path, browser: Browser,
                                                                  shots: Path) -> None:
    env = base_env(tmp_path)
    svc = Service(env, tmp_path / "serve.log", worker=True)
    try:
        admin = Api(svc.url, admin_token(env))
        acme, globex = customer(admin, svc.url, "acme"), customer(admin, svc.url, "globex")
        op = operator(admin, svc.url)
        # Each phase works a second: long enough to watch, short enough for CI.
        host = op.post("/v1/hosts", {"name": "node1", "address": "127.0.0.1", "connection": "local",
                                     "labels": {"sleep": "1", "rack": "r1"}})
        deadline = time.monotonic() + 120
        while op.get(f"/v1/hosts/{host['id']}")["state"] != "available":
            assert time.monotonic() < deadline, "the host was not commissioned"
            time.sleep(0.5)
        page = browser.new_page()
        try:
            customer_journey(page, svc.url, acme, admin, shots)
            other = browser.new_page()
            try:
                foreign_tenant(other, svc.url, globex, acme, shots)
            finally:
                other.close()
        except BaseException:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            print(f"service log:\n{svc.tail(60)}")
            raise
    finally:
        svc.stop()


def customer_journey(page: Page, url: str, acme: Api, admin: Api, shots: Path) -> None:
    arrivals: list[tuple[float, dict[str, Any]]] = []
    page.expose_function("__sseArrived", lambda at, data: arrivals.append((at, json.loads(data))))
    page.add_init_script(RECORD_SSE)
    token = acme.c.headers["Authorization"].removeprefix("Bearer ")
    sign_in(page, url, token)
    cookie = next(c for c in page.context.cookies() if c["name"] == "prov_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert token not in cookie["value"]
    page.screenshot(path=str(shots / "01-signed-in.png"), full_page=True)

    # A guardrail refusal reads on the page, with the form kept as typed.
    page.click("header >> text=requests")
    page.click("#new-request")
    page.fill("textarea[name=labels]", "rack=r1")
    page.fill("input[name=lease_hours]", "1000")
    page.fill("textarea[name=ssh_public_key]", PUBKEY)
    page.click("#submit-request")
    expect(page.locator("#refused")).to_contain_text("lease.too_long")
    expect(page.locator("#refused")).to_contain_text("exceeds the maximum of 720")
    page.screenshot(path=str(shots / "02-refused-by-a-guardrail.png"), full_page=True)
    assert acme.get("/v1/requests")["total"] == 0

    # The request, then its job page: events arrive over the stream, no reload, up to handover.
    page.fill("input[name=lease_hours]", "24")
    page.click("#submit-request")
    expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    page.evaluate("window.__samePage = true")
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#status")).to_have_text("running", timeout=120_000)
    # Rows appended by the page's script while the job runs (a reload would drop __samePage).
    page.wait_for_function("document.querySelectorAll('#events tr').length > 5 && window.__samePage",
                           timeout=240_000)
    # The phases table follows the job's own updates: a later phase shows up before the page reloads.
    page.wait_for_function("document.getElementById('phases').textContent.includes('firewall') "
                           "&& window.__samePage", timeout=240_000)
    page.screenshot(path=str(shots / "03-job-live.png"), full_page=True)
    # The end event reloads the finished page: handed over, the rating form shown.
    expect(page.locator("#rate")).to_be_visible(timeout=300_000)
    expect(page.locator("#status")).to_have_text("succeeded")
    for phase in ("wipe", "raid", "firewall", "backup", "restore-verify", "handover"):
        expect(page.locator("#phases")).to_contain_text(phase)
    page.screenshot(path=str(shots / "04-handed-over.png"), full_page=True)
    job = acme.get(f"/v1/jobs/{job_id}")
    live = sorted({e["seq"] for _, e in arrivals})
    assert live and live[-1] == job["event_count"], (live[-5:], job["event_count"])
    assert "handover" in {e["phase"] for _, e in arrivals}  # handover itself was watched live
    report_sse_delay(arrivals)

    # Rate the delivery.
    page.select_option("#rate select[name=score]", "4")
    page.fill("#rate input[name=comment]", "smooth")
    page.click("#rate button")
    expect(page.locator("#rating")).to_contain_text("Rated 4/5")
    page.screenshot(path=str(shots / "05-rated.png"), full_page=True)
    req_id = job["request_id"]
    assert acme.get(f"/v1/requests/{req_id}/rating")["score"] == 4

    # A form posted without the session's CSRF token (same origin, the cookie goes along): refused.
    page.click("#request-link")
    expect(page.locator("#req-status")).to_have_text("ready")
    page.evaluate("""() => { const f = document.createElement('form'); f.method = 'post';
                             f.action = location.pathname + '/release'; document.body.appendChild(f); f.submit(); }""")
    expect(page.locator("h1")).to_have_text("Form refused")
    expect(page.locator(".note")).to_contain_text("CSRF")
    page.screenshot(path=str(shots / "06-form-without-csrf-refused.png"), full_page=True)
    assert acme.get(f"/v1/requests/{req_id}")["status"] == "ready"

    # Release from the request page (the browser asks to confirm).
    page.goto(f"{url}/ui/requests/{req_id}")
    page.once("dialog", lambda d: d.accept())
    page.click("#release button")
    expect(page.locator("#done")).to_contain_text("Release started")
    page.screenshot(path=str(shots / "07-released.png"), full_page=True)
    released = acme.get(f"/v1/requests/{req_id}")
    assert released["status"] in ("releasing", "released")
    # Audited as the API audits: who signed in, requested, rated, released.
    entries = admin.get("/v1/audit", limit=200)["items"]
    done = {e["action"] for e in entries if e["actor_name"] == "cust-acme"}
    assert {"session.create", "request.create", "request.rate", "request.release"} <= done, done


def foreign_tenant(page: Page, url: str, globex: Api, acme: Api, shots: Path) -> None:
    sign_in(page, url, globex.c.headers["Authorization"].removeprefix("Bearer "))
    [req] = acme.get("/v1/requests")["items"]
    for path in (f"/ui/jobs/{req['job_ids'][0]}", f"/ui/requests/{req['id']}"):
        resp = page.goto(url + path)
        assert resp is not None and resp.status == 404, path
        expect(page.locator(".note")).to_contain_text("does not exist or is not visible")
    page.screenshot(path=str(shots / "08-foreign-tenant-not-found.png"), full_page=True)


def report_sse_delay(arrivals: list[tuple[float, dict[str, Any]]]) -> None:
    """Stored (created_at) to arrival in the browser, per event: printed, the bench has the figure."""
    delays = sorted(at - datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")).timestamp() * 1000
                    for at, e in arrivals)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"SSE stored->browser over {len(delays)} events: p50 {statistics.median(delays):.0f} ms, "
          f"p99 {p99:.0f} ms, max {delays[-1]:.0f} ms")
