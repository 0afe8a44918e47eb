"""The SQL ranking (allocation_sql.ranked_ids) must pick and order hosts exactly like the pure
rule (allocation.rank), on SQLite and on the real PostgreSQL, for awkward fleets too."""

from __future__ import annotations

import random

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from provisioner.core.allocation import Candidate, Constraints, rank
from provisioner.services.allocation_sql import ranked_ids
from provisioner.store.models import Host

NAMES = ["a", "B", "b", "a-1", "a_1", "Z9", "z", "host10", "host9", "élan", "_x", "a.b"]


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    SQLModel.metadata.create_all(bare_engine)
    return bare_engine


def random_hardware(rng: random.Random) -> dict:
    hw: dict = {}
    if rng.random() < 0.9:
        hw["cpus"] = rng.choice([1, 2, 4, 8, 16])
    if rng.random() < 0.9:
        hw["memory_mb"] = rng.choice([1024, 2048, 4096, 8192])
    shape = rng.random()
    if shape < 0.4:
        hw["disks"] = [{"name": f"/dev/sd{c}"} for c in "bcde"[: rng.randint(0, 4)]]
    elif shape < 0.8:
        hw["disks"] = [{"name": "/dev/sda"}, {"name": "/dev/sdb"}, {"name": "/dev/sdc"}]
        hw["data_disks"] = ["/dev/sdb", "/dev/sdc"][: rng.randint(0, 2)]
    elif shape < 0.9:
        hw["data_disks"] = None  # not a list: all disks count
        hw["disks"] = [{"name": "/dev/sdb"}]
    return hw


def fleet(rng: random.Random, n: int) -> list[Host]:
    hosts = []
    for i in range(n):
        labels = {k: rng.choice(["r1", "r2"]) for k in ("rack", "zone") if rng.random() < 0.6}
        hosts.append(Host(name=f"{rng.choice(NAMES)}-{i:03d}" if rng.random() < 0.5 else f"{rng.choice(NAMES)}{i}",
                          address="10.0.0.1", pool=rng.choice(["default", "default", "gpu"]),
                          state=rng.choice(["available", "available", "available", "active", "failed"]),
                          labels=labels, hardware=random_hardware(rng),
                          driver=rng.choice(["static", "static", "redfish"])))
    return hosts


@pytest.mark.parametrize("seed", range(6))
def test_sql_ranking_equals_the_pure_rule(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    with Session(engine) as s:
        s.add_all(fleet(rng, 120))
        s.commit()
        hosts = s.exec(select(Host)).all()
        wants = [Constraints(), Constraints(pool="gpu"), Constraints(min_cpus=4), Constraints(min_memory_mb=4096),
                 Constraints(min_disks=2), Constraints(labels={"rack": "r1"}),
                 Constraints(labels={"rack": "r2", "zone": "r1"}, min_cpus=2, min_disks=1),
                 Constraints(min_cpus=64), Constraints(with_image=True),
                 Constraints(pool="gpu", min_cpus=2, with_image=True)]
        for want in wants:
            expected = [c.id for c in rank((Candidate(h.id or 0, h.name, h.pool, h.labels or {}, h.hardware or {},
                                                      h.driver)
                                            for h in hosts if h.state == "available"), want)]
            got = list(s.exec(ranked_ids(want, engine.dialect.name)).all())
            assert got == expected, want
