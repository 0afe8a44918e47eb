"""The erase's read-back spots (playbooks/roles/provisioner/module_utils/prov_erase.py): spread over
the whole disk, one in each stratum, aligned for O_DIRECT, never past the end."""

from __future__ import annotations

import random

from tests.module_utils import load_module_util

prov_erase = load_module_util("prov_erase")
CHUNK = prov_erase.CHUNK


def test_one_spot_per_stratum_plus_head_and_tail() -> None:
    size = (1 << 30) + 512 * 7  # not a multiple of the chunk: the tail spot must still fit
    samples = 1024
    offs = prov_erase.sample_offsets(size, samples, random.Random(1))
    assert offs == sorted(set(offs)) and offs[0] == 0 and offs[-1] + CHUNK <= size
    assert offs[-1] > size - 2 * CHUNK
    assert all(o % CHUNK == 0 for o in offs)
    stratum = size / samples
    hit = {int(o // stratum) for o in offs}
    assert hit == set(range(samples))


def test_spots_move_between_runs_and_tiny_disks() -> None:
    size = 64 << 20
    a = prov_erase.sample_offsets(size, 256, random.Random(1))
    b = prov_erase.sample_offsets(size, 256, random.Random(2))
    assert a != b  # a disk cannot be made to pass by keeping data between fixed spots
    assert prov_erase.sample_offsets(CHUNK, 16) == [0]
    assert set(prov_erase.sample_offsets(3 * CHUNK, 1024)) == {0, CHUNK, 2 * CHUNK}  # all of it: head + tail MiB


def test_first_and_last_mib_are_read_whole() -> None:
    """Partition tables, the GPT backup header and superblocks live there: every chunk is read."""
    mib = 1 << 20
    size = (8 << 30) + 4096
    offs = set(prov_erase.sample_offsets(size, 64, random.Random(3)))
    last = (size - CHUNK) // CHUNK * CHUNK
    assert set(range(0, mib, CHUNK)) <= offs
    assert {last - i * CHUNK for i in range(mib // CHUNK)} <= offs
    assert len(offs) >= 64 + 2 * (mib // CHUNK) - 2
