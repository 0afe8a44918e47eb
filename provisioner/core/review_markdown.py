"""The service review and the weekly summary as Markdown: plain text from the review's JSON document
(`services.service_review`), for a wiki page, an e-mail or a ticket. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f}%"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    if len(out) == 2:
        out.append("| " + " | ".join(["(none)"] + [""] * (len(header) - 1)) + " |")
    return out + [""]


def _scope(doc: Mapping[str, Any]) -> str:
    t = doc.get("tenant_id")
    return "all tenants" if t is None else f"tenant {t}"


def _slo_rows(slos: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    return [[s["name"], pct(s["objective"], 1), s["events"], s["bad"], pct(s["attainment"]),
             pct(s["budget_remaining"], 1), ", ".join(a["name"] for a in s.get("alerts", []) if a.get("firing"))
             or ", ".join(s.get("firing", []))] for s in slos]


def _jobs(jobs: Mapping[str, Any]) -> list[str]:
    rows = [[kind, *(counts.get(st, 0) for st in ("succeeded", "failed", "cancelled"))]
            for kind, counts in sorted(jobs["by_kind"].items())]
    live = ", ".join(f"{n} {st}" for st, n in sorted(jobs["live"].items())) or "none"
    return [f"{jobs['finished']} jobs finished in the period; live now: {live}.", "",
            *table(["kind", "succeeded", "failed", "cancelled"], rows)]


def _toil(t: Mapping[str, Any]) -> list[str]:
    return table(["what", "count"], [["failed jobs", t["failed_jobs"]], ["retried jobs", t["retried_jobs"]],
                                     ["manual host moves", t["manual_host_moves"]],
                                     ["waivers granted", t["waivers_granted"]],
                                     ["escalations opened", t["escalations_opened"]], ["total", t["total"]]])


def _escalations(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return table(["rating", "request", "tenant", "score", "opened", "age (days)"],
                 [[e["rating_id"], e["request_id"], e["tenant_id"], e["score"], e["opened"], e["age_days"]]
                  for e in rows])


def review(doc: Mapping[str, Any]) -> str:
    p = doc["period"]
    slo = doc["slo"]
    out = [f"# Service review, {p['label']}: {p['start']} to {p['end']} ({_scope(doc)})", "",
           "## SLA/SLO summary", "",
           f"{slo['met']} of {slo['measured']} measured SLOs met their objective ({slo['defined']} defined).", "",
           *table(["SLO", "objective", "events", "bad", "attained", "budget left", "alerts firing"],
                  _slo_rows(slo["slos"])),
           "## Progress against the service's goals", "",
           *table(["goal", "objective", "this period", "period before", "met"],
                  [[g["goal"], pct(g["objective"], 1), pct(g["attainment"]), pct(g["previous_attainment"]),
                    "-" if g["met"] is None else ("yes" if g["met"] else "no")] for g in slo["goals"]]),
           "## Jobs", "", *_jobs(doc["jobs"]),
           "## People and hardware", "",
           f"{doc['fleet']['hosts']} hosts: " + ", ".join(f"{n} {st}" for st, n in sorted(
               doc["fleet"]["by_state"].items())) + ".", "",
           *table(["pool", "hosts", "capacity", "in use", "utilisation"],
                  [[q["pool"], q["hosts"], q["capacity"], q["in_use"], pct(q["utilisation"], 1)]
                   for q in doc["fleet"]["by_pool"]])]
    i = doc["integrity"]
    r = i["restore_tests"]
    out += ["## Data integrity", "",
            f"Restore tests in the period: {r['run']} run, {r['passed']} passed, {r['failed']} failed. "
            f"Hosts in use: {i['hosts_in_use']}, never restored: {i['hosts_never_restored']}, restored in the "
            f"period: {i['hosts_restored_in_period']}.", "",
            *table(["host (oldest last restore first)", "pool", "last restore", "passed"],
                   [[h["host"], h["pool"], h["last_restore_at"] or "never", h["passed"]]
                    for h in i["oldest_last_restore"]]),
            "## Toil", "", f"Period before: {doc['toil']['previous_period_total']} in total.", "",
            *_toil(doc["toil"])]
    out += [f"- {k}: {v}" for k, v in doc["toil"]["counted"].items()] + [""]
    out += ["## Capacity plans", ""]
    if doc["capacity"] is None:
        out += ["Pool capacity is the operators' view.", ""]
    else:
        out += table(["pool", "capacity", "in use", "trend (hosts/day)", "days left", "runs out on"],
                     [[c["pool"], c["capacity"], c["in_use"], c["rate_per_day"], c["days_left"],
                       c["runs_out_on"] or "not at this rate"] for c in doc["capacity"]])
    rt = doc["ratings"]
    out += ["## Customer ratings", "",
            f"{rt['count']} ratings, mean {rt['mean'] if rt['mean'] is not None else '-'}, {rt['low']} low; "
            f"{rt['open_escalations']} open escalations.", "",
            *table(["score", "ratings"], [[k, v] for k, v in sorted(rt["distribution"].items())]),
            "## Open escalations", "", *_escalations(doc["open_escalations"]),
            "## Maturity", "",
            *table(["area", "level", "evidence"], [[m["area"], f"{m['level']} ({m['label']})", m["evidence"]]
                                                   for m in doc["maturity"]]),
            "## Data catalogue", "",
            *table(["table", "holds", "retention", "regenerated", "personal data"],
                   [[c["table"], c["holds"], c["retention"], c["regenerated"], ", ".join(c["personal_data"]) or "-"]
                    for c in doc["catalogue"]])]
    return "\n".join(out)


def weekly(doc: Mapping[str, Any]) -> str:
    p = doc["period"]
    ch = doc["changes"]
    out = [f"# Production meeting, {p['label']}: {p['start']} to {p['end']} ({_scope(doc)})", "",
           "## What changed", "",
           *table(["when", "image", "from", "to", "by", "reason"],
                  [[c["at"], c["image"] or c["image_id"], c["from"], c["to"], c["by"], c["reason"]]
                   for c in ch["images"]]),
           *table(["when", "policy version", "by"], [[c["at"], c["version"], c["by"]] for c in ch["policy"]]),
           "## SLOs", "",
           *table(["SLO", "objective", "events", "bad", "attained", "budget left", "alerts firing"],
                  _slo_rows(doc["slo"])),
           "## Jobs", "", *_jobs(doc["jobs"]),
           "## Top failure reasons", "",
           *table(["kind", "reason", "jobs"], [[f["kind"], f["reason"], f["count"]] for f in doc["top_failures"]]),
           "## Toil", "", *_toil(doc["toil"]),
           "## Open escalations", "", *_escalations(doc["open_escalations"])]
    return "\n".join(out)
