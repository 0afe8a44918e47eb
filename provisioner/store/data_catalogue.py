"""What the service stores: every table, what it holds, how long, how it comes back if lost, and
which of its fields are personal data. The service review prints it; a test fails when a table
exists in the models that this catalogue does not describe (or one it describes is gone).

Retention: nothing is pruned automatically today; "kept" says so, and the review shows it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableEntry:
    table: str
    holds: str
    retention: str
    regenerated: str
    personal: tuple[str, ...] = ()


KEPT = "kept until deleted by hand (no automatic pruning)"
BACKUP = "not derivable: restore from the database backup"

CATALOGUE: tuple[TableEntry, ...] = (
    TableEntry("tenant", "customer organisations and their quotas", KEPT, BACKUP, ()),
    TableEntry("user", "people and service accounts with their role and tenant", KEPT, BACKUP, ("name",)),
    TableEntry("apitoken", "API tokens: id, salted hash of the secret, expiry, revocation", KEPT,
               "not derivable: issue new tokens (`provisioner tokens create`)", ("name",)),
    TableEntry("host", "enrolled machines: address, pool, state, pinned SSH key, encrypted credentials, "
               "hardware facts, BMC URL + pinned certificate + encrypted credentials, compliance and last "
               "restore test", KEPT,
               "enrolment data from the backup; facts, compliance and restore state by re-running "
               "commission and a compliance check", ()),
    TableEntry("hostrequest", "customers' requests for hosts: image, count, pool, constraints, lease", KEPT,
               BACKUP, ()),
    TableEntry("job", "every provision/release/commission/compliance job: state, phases with timings, SLIs, "
               "error; a bare-metal deploy's generated keys, encrypted, until the job settles", KEPT,
               BACKUP + "; the jobs' effects on hosts are re-observed by a compliance check", ()),
    TableEntry("jobevent", "per-task ansible events of each job (host, task, status, duration, output)", KEPT,
               "not derivable: the job's output is lost with it; re-running the job gives new events",
               ("stdout",)),
    TableEntry("auditentry", "append-only record of every state change: who, what, before and after", KEPT,
               BACKUP + " (append-only: never rewritten)", ("actor_name", "before", "after")),
    TableEntry("jobtally", "running totals of settled jobs behind /metrics (durations, outcomes, SLO events)",
               KEPT, "recomputed from the job table (every settled job's observations)", ()),
    TableEntry("policydoc", "the current guardrail policy document and its version", KEPT,
               BACKUP + "; the audit log holds every version", ("updated_by_name",)),
    TableEntry("waiver", "guardrail exceptions: code, scope, justification, decision, expiry", KEPT, BACKUP,
               ("justification", "decision_note")),
    TableEntry("image", "the OS image catalogue: channel, size, sha256, block map, canary result", KEPT,
               "re-publish the image files (`provisioner images publish`); channels from the audit log",
               ("published_by",)),
    TableEntry("webhook", "tenants' webhook endpoints with their encrypted signing secret", KEPT, BACKUP, ()),
    TableEntry("webhookdelivery", "the webhook outbox and delivery log: exact body, status, attempts", KEPT,
               "not derivable: past deliveries are history; pending ones are re-emitted by no one", ()),
    TableEntry("webhookattempt", "each delivery attempt: HTTP status, latency, error", KEPT,
               "not derivable: history of attempts", ()),
    TableEntry("rating", "customers' 1-5 ratings of delivered requests, comments, escalations and answers", KEPT,
               BACKUP, ("user_id", "comment", "answered_by", "answer")),
    TableEntry("dashboardsession", "browser sessions of the dashboard: hash of the session id, user, the API "
               "token signed in with, created / last seen / expiry, revoked", KEPT,
               "not needed: losing it signs every browser out; people sign in again with their token",
               ("user_id", "last_seen_at")),
)


def described() -> dict[str, TableEntry]:
    return {e.table: e for e in CATALOGUE}
