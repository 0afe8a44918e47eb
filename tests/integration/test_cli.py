"""The CLI against a real running service (subprocesses, JSON output), as a script would use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import PUBKEY, TEST_PLAYBOOKS
from tests.integration.procs import Service
from tests.integration.sshd import Sshd

BIN = Path(sys.executable).parent / "provisioner"


def cli(env: dict[str, str], *args: str, token: str | None = None, ok: bool = True) -> Any:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
    if token:
        full["PROVISIONER_TOKEN"] = token
    r = subprocess.run([str(BIN), "-o", "json", *args], env=full, capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout) if r.stdout.strip() else None
    return r


def _stored_key(data_dir: Path, host_id: int) -> str:
    """The key as the service stored it, decrypted with the service's own key file."""
    from sqlmodel import Session

    from provisioner.store.config import Settings
    from provisioner.store.db import make_engine
    from provisioner.store.models import Host
    from provisioner.store.secrets import decrypt

    # Explicit, so settings an earlier in-process test left in os.environ (a PostgreSQL URL whose
    # database is gone, a key set) cannot point this reader elsewhere than the service it checks.
    settings = Settings(data_dir=data_dir, database_url=None, secret_key=None, secret_key_file=None)
    engine = make_engine(settings.effective_database_url)
    try:
        with Session(engine) as s:
            host = s.get(Host, host_id)
            assert host is not None and host.credential_ciphertext
            return decrypt(settings, host.credential_ciphertext)
    finally:
        engine.dispose()


def test_cli_end_to_end(tmp_path: Path) -> None:
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS),
           "PROVISIONER_ALLOW_LOCAL_CONNECTION": "1"}
    svc = Service(env, tmp_path / "svc.log", worker=True)
    try:
        env["PROVISIONER_URL"] = svc.url
        admin = cli(env, "admin", "init")["token"]
        again = cli(env, "admin", "init", ok=False)
        assert again.returncode == 1 and "an admin exists already" in again.stderr + again.stdout
        tenant = cli(env, "tenants", "create", "acme", "--quota", "default=3", token=admin)
        assert tenant["quota"] == {"default": 3}
        op = cli(env, "users", "create", "op", "--role", "operator", token=admin)
        cu = cli(env, "users", "create", "cu", "--role", "customer", "--tenant-id", str(tenant["id"]), token=admin)
        op_tok = cli(env, "tokens", "create", str(op["id"]), token=admin)["token"]
        cu_tok = cli(env, "tokens", "create", str(cu["id"]), token=admin)["token"]
        host = cli(env, "hosts", "enroll", "n1", "127.0.0.1", "--connection", "local", token=op_tok)
        # --key-file as the README shows: the key is stored byte for byte (its final newline too) and
        # is a key OpenSSH can load again.
        # The service reads the host's SSH host key at enrollment: a real sshd answers for n2.
        sshd = Sshd(tmp_path / "sshd")
        keyfile = sshd.client_key
        keyed = cli(env, "hosts", "enroll", "n2", "127.0.0.1", "--port", str(sshd.port), "--key-file", str(keyfile),
                    "--fingerprint", sshd.fingerprint(), "--no-commission", token=op_tok)
        assert keyed["credential"] == "stored" and "PRIVATE KEY" not in json.dumps(keyed)
        assert keyed["host_key_fingerprint"] == sshd.fingerprint()
        # hosts repin: a refused fingerprint changes nothing; the checked one is pinned.
        old = sshd.fingerprint()
        sshd.change_host_key()
        refused = cli(env, "hosts", "repin", str(keyed["id"]), "--fingerprint", old, token=op_tok, ok=False)
        assert refused.returncode == 1 and json.loads(refused.stderr)["code"] == "host.key_mismatch"
        repinned = cli(env, "hosts", "repin", str(keyed["id"]), "--fingerprint", sshd.fingerprint(), token=op_tok)
        assert repinned["host_key_fingerprint"] == sshd.fingerprint() != old
        sshd.stop()
        stored = _stored_key(tmp_path / "data", keyed["id"])
        assert stored.encode() == keyfile.read_bytes() and stored.endswith("\n")
        loaded = tmp_path / "loaded_key"
        loaded.write_text(stored)
        loaded.chmod(0o600)
        pub = subprocess.run(["ssh-keygen", "-y", "-f", str(loaded)], capture_output=True, text=True)
        assert pub.returncode == 0 and pub.stdout.split()[:2] == Path(f"{keyfile}.pub").read_text().split()[:2]
        cjob = cli(env, "jobs", "list", "--host-id", str(host["id"]), token=op_tok)["items"][0]
        assert cli(env, "jobs", "watch", str(cjob["id"]), token=op_tok)["status"] == "succeeded"
        key = tmp_path / "id.pub"
        key.write_text(PUBKEY)
        out = cli(env, "requests", "create", "--ssh-key", str(key), "--port", "443/tcp@10.0.0.0/8",
                  "--watch", token=cu_tok)
        assert [j["status"] for j in out["jobs"]] == ["succeeded"] and out["request"]["count"] == 1
        req = cli(env, "requests", "list", token=cu_tok)["items"][0]
        assert req["status"] == "ready" and req["params"]["firewall_ports"][0]["sources"] == ["10.0.0.0/8"]
        shown = cli(env, "jobs", "show", str(req["job_ids"][0]), token=cu_tok)
        assert shown["sli"]["slo_met"] is True and len(shown["phases"]) == 6
        events = cli(env, "jobs", "events", str(req["job_ids"][0]), token=cu_tok)
        assert events["items"][0]["seq"] == 1
        denied = cli(env, "audit", "list", token=cu_tok, ok=False)
        assert denied.returncode == 1 and json.loads(denied.stderr)["code"] == "auth.forbidden"
        audit = cli(env, "audit", "list", "--action", "request.create", token=admin)
        assert audit["items"][0]["actor_name"] == "cu"
        # The customers' voice: a low rating is an escalation an operator answers.
        rating = cli(env, "requests", "rate", str(req["id"]), "1", "--comment", "slow handover", token=cu_tok)
        assert rating["escalation"] == "open" and rating["comment"] == "slow handover"
        assert [e["id"] for e in cli(env, "escalations", "list", token=op_tok)["items"]] == [rating["id"]]
        answered = cli(env, "escalations", "answer", str(rating["id"]), "called them; disk swapped", token=op_tok)
        assert answered["escalation"] == "answered" and cli(env, "escalations", "list", token=op_tok)["items"] == []
        hook = cli(env, "webhooks", "add", "https://hooks.invalid/provisioner", "-e", "job.succeeded", token=cu_tok)
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.succeeded"]
        assert "secret" not in cli(env, "webhooks", "list", token=cu_tok)["items"][0]
        # A reimage: this host was enrolled over SSH (and the name is outside the catalogue): refused, as JSON.
        re_ = cli(env, "requests", "reimage", str(req["id"]), "--image", "debian-12", "--no-keep-data", token=cu_tok,
                  ok=False)
        assert re_.returncode == 1 and json.loads(re_.stderr)["code"] == "image.unknown", re_.stderr
        rel = cli(env, "requests", "release", str(req["id"]), "--watch", token=cu_tok)
        assert rel["request"]["status"] == "releasing" and rel["jobs"][0]["kind"] == "release"
        assert rel["jobs"][0]["status"] == "succeeded"
        [delivery] = cli(env, "webhooks", "deliveries", str(hook["id"]), token=cu_tok)["items"]
        assert delivery["event_type"] == "job.succeeded" and json.loads(delivery["body"])["data"]["kind"] == "release"
        cli(env, "webhooks", "rm", str(hook["id"]), token=cu_tok)
        assert cli(env, "webhooks", "list", token=cu_tok)["items"] == []
        # SLOs: the provision and the release above, judged.
        slos = {s["name"]: s for s in cli(env, "slo", token=op_tok)["slos"]}
        assert (slos["provision-handover"]["events"], slos["provision-handover"]["good"]) == (1, 1)
        assert slos["release"]["events"] == 1 and slos["provision-handover"]["budget_remaining"] == 1.0
        week = cli(env, "slo", "--period-days", "7", "--end", "2099-01-01T00:00:00", token=op_tok)
        assert week["slos"][0]["period"] == "7d" and week["slos"][0]["events"] == 0  # the jobs are older
        bad_period = cli(env, "slo", "--period-days", "0", token=op_tok, ok=False)
        assert bad_period.returncode == 1 and json.loads(bad_period.stderr)["code"] == "request.invalid"
        # A customer reads its own tenant's SLOs (the jobs above are acme's); the imaging team may not.
        mine = {s["name"]: s for s in cli(env, "slo", token=cu_tok)["slos"]}
        assert (mine["provision-handover"]["events"], mine["release"]["events"]) == (1, 1)
        im = cli(env, "users", "create", "im", "--role", "imager", "--tenant-id", str(tenant["id"]), token=admin)
        im_tok = cli(env, "tokens", "create", str(im["id"]), token=admin)["token"]
        assert json.loads(cli(env, "slo", token=im_tok, ok=False).stderr)["code"] == "auth.forbidden"
        table = subprocess.run([str(BIN), "slo"], env={k: v for k, v in os.environ.items()
                                                       if not k.startswith("PROVISIONER_")}
                               | env | {"PROVISIONER_TOKEN": op_tok}, capture_output=True, text=True, timeout=300)
        assert table.returncode == 0 and "provision-handover" in table.stdout and "burn 1h" in table.stdout
        # Guardrail and catalogue commands.
        assert cli(env, "policy", "show", token=cu_tok)["policy"]["max_open_ports"] >= 1
        w = cli(env, "waivers", "request", "--code", "backup.required", "--scope", "tenant:acme",
                "--justification", "restores are tested by the customer's own tooling this month", token=cu_tok)
        assert w["status"] == "requested"
        self_approve = cli(env, "waivers", "approve", str(w["id"]), "--expires-at", "2099-01-01T00:00:00Z",
                           token=cu_tok, ok=False)
        assert self_approve.returncode == 1
        assert cli(env, "waivers", "list", token=op_tok)["items"][0]["id"] == w["id"]
        raw = tmp_path / "tiny.raw"
        raw.write_bytes(b"\x01" * 4096 + b"\x00" * (1 << 20))
        img = cli(env, "images", "publish", str(raw), "--name", "tiny", "--version", "1", "--os-name", "none",
                  "--os-version", "0", token=admin)
        assert img["size"] == raw.stat().st_size and img["channel"] == "candidate"
        assert [i["name"] for i in cli(env, "images", "list", token=admin)["items"]] == ["tiny"]
        assert cli(env, "compliance", token=op_tok)["fleet"]["active"] == 0
        bad = cli(env, "requests", "create", "--ssh-key", str(key), "--port", "http", token=cu_tok,
                  ok=False)
        assert bad.returncode == 2 and "expected PORT" in bad.stderr
        # A name outside the catalogue is refused, with what the customer can request (the candidate
        # "tiny" is not theirs to request): nothing is opened.
        unknown = cli(env, "requests", "create", "debian-12", "--ssh-key", str(key), token=cu_tok, ok=False)
        problem = json.loads(unknown.stderr)
        assert unknown.returncode == 1 and problem["code"] == "image.unknown", unknown.stderr
        assert problem["requestable"] == [] and "debian-12" in problem["detail"]
        assert cli(env, "requests", "list", token=cu_tok)["total"] == 1
    finally:
        svc.stop()
