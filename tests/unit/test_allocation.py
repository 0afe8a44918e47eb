from __future__ import annotations

import pytest

from provisioner.core.allocation import Candidate, Constraints, choose, matches


def host(i: int, cpus: int = 4, mem: int = 4096, disks: int = 2, pool: str = "default", **labels: str) -> Candidate:
    hw = {"cpus": cpus, "memory_mb": mem, "disks": [{"name": f"/dev/vd{chr(98 + d)}"} for d in range(disks)]}
    return Candidate(i, f"h{i}", pool, labels, hw)


@pytest.mark.parametrize("cand,want,ok", [
    (host(1), Constraints(), True),
    (host(1, pool="gpu"), Constraints(), False),
    (host(1, rack="r1"), Constraints(labels={"rack": "r1"}), True),
    (host(1, rack="r2"), Constraints(labels={"rack": "r1"}), False),
    (host(1), Constraints(labels={"rack": "r1"}), False),
    (host(1, cpus=8), Constraints(min_cpus=8), True),
    (host(1, cpus=7), Constraints(min_cpus=8), False),
    (host(1, mem=1024), Constraints(min_memory_mb=1025), False),
    (host(1, disks=1), Constraints(min_disks=2), False),
    (host(1, disks=2), Constraints(min_disks=2), True),
    (Candidate(1, "bare", "default", {}, {}), Constraints(), True),
    (Candidate(1, "bare", "default", {}, {}), Constraints(min_cpus=1), False),
    # A host enrolled by its BMC has no OS until a deploy writes one: only requests with an image get it;
    # a host reached over SSH keeps its own OS: only requests without an image get it.
    (Candidate(1, "bm", "default", {}, {}, "redfish"), Constraints(with_image=True), True),
    (Candidate(1, "bm", "default", {}, {}, "redfish"), Constraints(), False),
    (Candidate(1, "os", "default", {}, {}, "static"), Constraints(), True),
    (Candidate(1, "os", "default", {}, {}, "static"), Constraints(with_image=True), False),
    (Candidate(1, "vm", "default", {}, {}, "vagrant"), Constraints(with_image=True), False),
])
def test_matches(cand: Candidate, want: Constraints, ok: bool) -> None:
    assert matches(cand, want) is ok


def test_best_fit_keeps_big_hosts() -> None:
    hosts = [host(1, cpus=64), host(2, cpus=4), host(3, cpus=8)]
    assert [c.id for c in choose(hosts, Constraints(min_cpus=4), 2)] == [2, 3]


def test_not_enough_gives_nothing() -> None:
    assert choose([host(1), host(2, pool="x")], Constraints(), 2) == []


def test_never_the_same_host_twice() -> None:
    picked = choose([host(i) for i in range(10)], Constraints(), 10)
    assert len({c.id for c in picked}) == 10


def test_ties_are_deterministic() -> None:
    hosts = [host(3), host(1), host(2)]
    assert [c.name for c in choose(hosts, Constraints(), 3)] == ["h1", "h2", "h3"]


def test_data_disks_from_commission_win_over_all_disks() -> None:
    from provisioner.core.allocation import data_disk_count

    assert data_disk_count({"disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}], "data_disks": ["/dev/vdb"]}) == 1
    assert data_disk_count({"disks": [{"name": "/dev/vda"}]}) == 1
    assert data_disk_count({}) == 0
