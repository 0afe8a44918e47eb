"""One key set for many machines, for real: `provisioner serve --no-worker` and `provisioner worker`
with different data dirs (as on two machines), PostgreSQL and Redis.

Without a shared key set a worker cannot decrypt what the API encrypted. With one (the API reads it
from PROVISIONER_SECRET_KEY_FILE, the worker from PROVISIONER_SECRET_KEY), a host enrolled with an
SSH key gets its job run by the worker, and image tokens minted with one process's settings are
accepted by the other. Then a rotation: new key first, old ciphertexts still decrypt, new ones use
the new key, `provisioner admin rotate-secrets` re-encrypts everything, and after the old key is
dropped everywhere the hosts' keys still work.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet, InvalidToken

from tests.integration.harness import PUBKEY
from tests.integration.procs import BIN, Api, RedisServer, Service, Worker, admin_token, customer, operator
from tests.integration.test_distributed import env_for, make_available, redis_srv  # noqa: F401  (fixture)

OLD, NEW = Fernet.generate_key(), Fernet.generate_key()


def ssh_key(tmp: Path, name: str) -> str:
    path = tmp / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


def run_py(env: dict[str, str], code: str, *args: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
    out = subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


MINT = ("import sys; from provisioner.store.config import Settings; from provisioner.imaging import tokens; "
        "print(tokens.issue(Settings(), job_id=int(sys.argv[1]), image_id=int(sys.argv[2])))")
CHECK = ("import sys; from provisioner.store.config import Settings; from provisioner.imaging import tokens\n"
         "from provisioner.core.errors import DomainError\n"
         "try: print(tokens.verify(Settings(), sys.argv[1], int(sys.argv[2])).job_id)\n"
         "except DomainError as e: print(e.code)")


def under(key: bytes, ciphertext: str) -> bool:
    try:
        Fernet(key).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def ciphertexts(pg_url: str) -> list[str]:
    with psycopg.connect(pg_url) as c:
        rows = c.execute("SELECT credential_ciphertext, backup_secret_ciphertext FROM host").fetchall()
    return [ct for row in rows for ct in row if ct]


def rotate(env: dict[str, str]) -> tuple[int, dict]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")} | env
    out = subprocess.run([str(BIN / "provisioner"), "-o", "json", "admin", "rotate-secrets"], env=full,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout)


def test_api_and_worker_on_two_machines_share_and_rotate_keys(tmp_path: Path, pg_url: str,
                                                              redis_srv: RedisServer) -> None:  # noqa: F811
    keyfile = tmp_path / "keys"
    keyfile.write_bytes(OLD + b"\n")
    api_env = env_for(tmp_path / "api", pg_url, redis_srv.url, PROVISIONER_SECRET_KEY_FILE=str(keyfile))
    worker_env = env_for(tmp_path / "worker", pg_url, redis_srv.url, PROVISIONER_SECRET_KEY=OLD.decode())
    svc = Service(api_env, tmp_path / "api.log")
    # 1. The old default: the worker's own data_dir/secret.key. It cannot read the API's secrets.
    worker = Worker(env_for(tmp_path / "worker", pg_url, redis_srv.url), tmp_path / "worker0.log")
    try:
        admin = Api(svc.url, admin_token(api_env))
        op = operator(admin, svc.url)
        lone = op.post("/v1/hosts", {"name": "lone", "address": "127.0.0.1", "connection": "local",
                                     "ssh_private_key": ssh_key(tmp_path, "k0"), "commission": True})
        job = admin.wait_job(admin.get("/v1/jobs", host_id=lone["id"])["items"][0]["id"], timeout=90)
        assert job["status"] == "failed" and job["error_code"] == "secrets.undecryptable", job
        assert "PROVISIONER_SECRET_KEY" in job["error"]
        assert (tmp_path / "worker" / "data" / "secret.key").exists()
        worker.stop()

        # 2. Shared keys: the worker runs the job of a host enrolled with an SSH key through the API
        # (ssh-add in the phase's agent fails on anything but the exact key bytes).
        worker = Worker(worker_env, tmp_path / "worker1.log")
        cust = customer(admin, svc.url)
        h1 = op.post("/v1/hosts", {"name": "h1", "address": "127.0.0.1", "connection": "local",
                                   "ssh_private_key": ssh_key(tmp_path, "k1"), "labels": {"sleep": "1"},
                                   "commission": False})
        make_available(pg_url, ["h1"])
        req = cust.post("/v1/requests", {"ssh_public_key": PUBKEY})
        job_id = req["job_ids"][0]
        admin.wait_job(job_id, lambda j: j["status"] == "running", timeout=60)

        # Image tokens cross processes both ways while the job runs.
        img = admin.c.post("/v1/images", params={"name": "shared", "format": "raw", "version": "1",
                                                 "os_name": "debian", "os_version": "12"},
                           content=random.Random(1).randbytes(1 << 20))
        assert img.status_code == 201, img.text
        image_id = img.json()["id"]
        url = f"{svc.url}/v1/images/{image_id}/content"
        from_worker = run_py(worker_env, MINT, str(job_id), str(image_id))
        r = httpx.get(url, headers={"Authorization": f"Bearer {from_worker}", "Range": "bytes=0-15"})
        assert r.status_code == 206 and r.content == random.Random(1).randbytes(1 << 20)[:16], r.text
        from_api = run_py(api_env, MINT, str(job_id), str(image_id))
        assert run_py(worker_env, CHECK, from_api, str(image_id)) == str(job_id)
        stranger = run_py(env_for(tmp_path / "stranger", pg_url, redis_srv.url), MINT, str(job_id), str(image_id))
        r = httpx.get(url, headers={"Authorization": f"Bearer {stranger}"})
        assert r.status_code == 401 and r.json()["code"] == "image.token_invalid"

        job = admin.wait_job(job_id, timeout=180)
        assert job["status"] == "succeeded", (job, worker.tail())
        assert all(under(OLD, ct) for ct in ciphertexts(pg_url))

        # 3. Rotation: the new key goes first everywhere (the API rereads its key file; the worker
        # restarts with the new environment). Old ciphertexts and tokens still work.
        worker.stop()
        keyfile.write_bytes(NEW + b"\n" + OLD + b"\n")
        both = NEW.decode() + "," + OLD.decode()
        worker_env["PROVISIONER_SECRET_KEY"] = both
        worker = Worker(worker_env, tmp_path / "worker2.log")
        assert run_py(worker_env, CHECK, from_api, str(image_id)) == str(job_id)  # token minted before
        h2 = op.post("/v1/hosts", {"name": "h2", "address": "127.0.0.1", "connection": "local",
                                   "ssh_private_key": ssh_key(tmp_path, "k2"), "commission": False})
        with psycopg.connect(pg_url) as c:
            ct2 = c.execute("SELECT credential_ciphertext FROM host WHERE id=%s", (h2["id"],)).fetchone()[0]
        assert under(NEW, ct2) and not under(OLD, ct2)  # new secrets use the new key
        stale = [ct for ct in ciphertexts(pg_url) if under(OLD, ct)]
        assert len(stale) == 3  # lone's and h1's SSH keys, h1's backup password

        code, report = rotate(api_env)
        assert code == 0, report
        assert (report["reencrypted"], report["already_current"], report["undecryptable"]) == (3, 1, 0), report
        assert report["per_column"]["host.credential_ciphertext"]["reencrypted"] == 2
        assert all(under(NEW, ct) and not under(OLD, ct) for ct in ciphertexts(pg_url))
        assert rotate(api_env)[1]["reencrypted"] == 0  # idempotent
        assert admin.get("/v1/audit", action="secrets.rotate")["items"][0]["after"]["reencrypted"] == 0

        # 4. The old key is dropped everywhere: h1's key (re-encrypted) still opens its release job.
        worker.stop()
        keyfile.write_bytes(NEW + b"\n")
        worker_env["PROVISIONER_SECRET_KEY"] = NEW.decode()
        worker = Worker(worker_env, tmp_path / "worker3.log")
        rel = cust.post(f"/v1/requests/{req['id']}/release")
        job = admin.wait_job(max(rel["job_ids"]), timeout=180)
        assert job["status"] == "succeeded", (job, worker.tail())
        assert admin.get(f"/v1/hosts/{h1['id']}")["state"] == "available"
        assert run_py(worker_env, CHECK, from_api, str(image_id)) == "image.token_invalid"  # old key gone
    finally:
        worker.stop()
        svc.stop()


def test_rotation_reports_what_no_key_opens(tmp_path: Path, pg_url: str) -> None:
    """A secret encrypted with a key missing from the set is named, left as it was, and exit code 1."""
    env = env_for(tmp_path, pg_url, "", PROVISIONER_SECRET_KEY=OLD.decode())
    del env["PROVISIONER_BROKER_URL"]
    foreign = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    mine = Fernet(OLD).encrypt(b"y").decode()
    run_py(env, "import sys\nfrom provisioner.store.db import session_scope\n"
                "from provisioner.store.models import Host\n"
                "with session_scope() as s:\n"
                "    s.add(Host(name='a', address='x', credential_ciphertext=sys.argv[1]))\n"
                "    s.add(Host(name='b', address='x', credential_ciphertext=sys.argv[2]))\n"
                "    s.commit()", foreign, mine)
    env["PROVISIONER_SECRET_KEY"] = NEW.decode() + "," + OLD.decode()
    code, report = rotate(env)
    assert code == 1 and report["undecryptable"] == 1 and report["reencrypted"] == 1, report
    assert report["undecryptable_rows"] == ["host.credential_ciphertext id=1"]
    with psycopg.connect(pg_url) as c:
        rows = dict(c.execute("SELECT name, credential_ciphertext FROM host").fetchall())
    assert rows["a"] == foreign and under(NEW, rows["b"])


def test_processes_refuse_unusable_keys(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    keyfile = tmp_path / "keys"
    keyfile.write_bytes(NEW + b"\r\n")  # an editor's CRLF: refused, not silently fixed
    for args, env in (
        (["serve", "--port", "1"], {"PROVISIONER_SECRET_KEY": "not-a-key"}),
        (["worker", "--processes", "1"], {"PROVISIONER_SECRET_KEY_FILE": str(keyfile),
                                          "PROVISIONER_BROKER_URL": "redis://127.0.0.1:1/0"}),
    ):
        out = subprocess.run([str(BIN / "provisioner"), *args], capture_output=True, text=True, timeout=60,
                             env=base | env | {"PROVISIONER_DATA_DIR": str(tmp_path)})
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "is not a Fernet key" in out.stderr and "PROVISIONER_SECRET_KEY" in out.stderr
        assert NEW.decode() not in out.stderr + out.stdout
    fresh = subprocess.run([str(BIN / "provisioner"), "admin", "new-secret-key"], env=base, capture_output=True,
                           timeout=60, check=True).stdout
    assert len(fresh) == 45 and fresh.endswith(b"\n") and Fernet(fresh.strip())
