"""Table-driven tests of the block-map functions (provisioner/imaging/bmap.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from provisioner.imaging.bmap import (
    BLOCK_SIZE,
    BmapBuilder,
    align_ranges,
    bmap_from_file,
    data_bytes,
    data_extents,
    is_zero,
    merge_ranges,
    nonzero_block_runs,
    split_ranges,
    validate_bmap,
)

MiB = 1 << 20
B = BLOCK_SIZE


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("ranges", "gap", "expected"),
    [
        ([], 0, []),
        ([(0, 10)], 0, [(0, 10)]),
        ([(0, 10), (10, 20)], 0, [(0, 20)]),  # touching
        ([(0, 10), (5, 20)], 0, [(0, 20)]),  # overlapping
        ([(0, 10), (2, 5)], 0, [(0, 10)]),  # contained
        ([(20, 30), (0, 10)], 0, [(0, 10), (20, 30)]),  # unsorted input
        ([(0, 10), (11, 20)], 0, [(0, 10), (11, 20)]),
        ([(0, 10), (15, 20)], 5, [(0, 20)]),  # gap == limit merges
        ([(0, 10), (16, 20)], 5, [(0, 10), (16, 20)]),
        ([(5, 5), (0, 3)], 0, [(0, 3)]),  # empty ranges dropped
    ],
)
def test_merge_ranges(ranges: list[tuple[int, int]], gap: int, expected: list[tuple[int, int]]) -> None:
    assert merge_ranges(ranges, gap) == expected


@pytest.mark.parametrize(
    ("ranges", "max_len", "expected"),
    [
        ([(0, 10)], 16, [(0, 10)]),
        ([(0, 32)], 16, [(0, 16), (16, 32)]),
        ([(10, 40)], 16, [(10, 16), (16, 32), (32, 40)]),  # cut at absolute multiples
        ([(16, 17)], 16, [(16, 17)]),
    ],
)
def test_split_ranges(ranges: list[tuple[int, int]], max_len: int, expected: list[tuple[int, int]]) -> None:
    assert split_ranges(ranges, max_len) == expected


@pytest.mark.parametrize(
    ("ranges", "size", "expected"),
    [
        ([(1, 2)], 100 * B, [(0, B)]),
        ([(B - 1, B + 1)], 100 * B, [(0, 2 * B)]),
        ([(0, B), (B + 10, 3 * B)], 100 * B, [(0, 3 * B)]),  # rounding makes them touch
        ([(5 * B, 5 * B + 10)], 5 * B + 10, [(5 * B, 5 * B + 10)]),  # clipped to the size
        ([(10 * B, 11 * B)], 5 * B, []),  # past the end
    ],
)
def test_align_ranges(ranges: list[tuple[int, int]], size: int, expected: list[tuple[int, int]]) -> None:
    assert list(align_ranges(ranges, B, size)) == expected


NZ = b"\x01"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (bytes(3 * B), []),
        (NZ + bytes(3 * B - 1), [(0, B)]),
        (bytes(3 * B - 1) + NZ, [(2 * B, 3 * B)]),
        (bytes(B) + NZ * (2 * B) + bytes(B), [(B, 3 * B)]),  # adjacent blocks merge
        (NZ + bytes(2 * B) + NZ, [(0, B), (2 * B, 2 * B + 2)]),  # short last block
        (bytes(B) + NZ, [(B, B + 1)]),
    ],
)
def test_nonzero_block_runs(data: bytes, expected: list[tuple[int, int]]) -> None:
    assert nonzero_block_runs(data) == expected
    assert nonzero_block_runs(memoryview(data)) == expected


@pytest.mark.parametrize(
    ("data", "zero"),
    [(b"", True), (bytes(10), True), (bytes(9 * MiB), True), (bytes(9 * MiB - 1) + NZ, False), (NZ, False)],
)
def test_is_zero(data: bytes, zero: bool) -> None:
    assert is_zero(data) is zero


def build(pieces: list[bytes | int], **kw: Any) -> dict[str, Any]:
    """Feed real bytes (bytes) or holes (int lengths) to a builder."""
    b = BmapBuilder(**kw)
    for p in pieces:
        if isinstance(p, int):
            b.feed_zeros(p)
        else:
            b.feed(p)
    return b.finish()


def content_of(pieces: list[bytes | int]) -> bytes:
    return b"".join(bytes(p) if isinstance(p, int) else p for p in pieces)


RND = random.Random(7)
D1 = RND.randbytes(2 * B)
D2 = RND.randbytes(B)


@pytest.mark.parametrize(
    ("pieces", "kw", "expected_ranges"),
    [
        ([], {}, []),
        ([8 * B], {}, []),  # all hole: no ranges, hash of zeros
        ([bytes(8 * B)], {}, []),  # allocated zeros are holes too
        ([D1], {}, [(0, 2 * B)]),
        ([B, D1, B], {}, [(B, 3 * B)]),
        ([D1, 4 * B, D2], {"merge_gap": 0}, [(0, 2 * B), (6 * B, 7 * B)]),
        ([D1, 4 * B, D2], {"merge_gap": 4 * B}, [(0, 7 * B)]),  # the gap is bridged
        ([D1, bytes(4 * B), D2], {"merge_gap": 4 * B}, [(0, 7 * B)]),
        ([D1, 5 * B, D2], {"merge_gap": 4 * B}, [(0, 2 * B), (7 * B, 8 * B)]),
        # a range never crosses a multiple of max_range, even when data is contiguous
        ([MiB - B, D1, MiB - B], {"max_range": MiB}, [(MiB - B, MiB), (MiB, MiB + B)]),
        # nor is a gap bridged across that boundary
        ([MiB - B, D2, B, D2], {"max_range": MiB, "merge_gap": 8 * B}, [(MiB - B, MiB), (MiB + B, MiB + 2 * B)]),
        ([D1[:100]], {}, [(0, 100)]),  # image size off the block grid
    ],
)
def test_builder_ranges_and_hashes(
    pieces: list[bytes | int], kw: dict[str, Any], expected_ranges: list[tuple[int, int]]
) -> None:
    bmap = build(pieces, **kw)
    content = content_of(pieces)
    assert [(r["start"], r["end"]) for r in bmap["ranges"]] == expected_ranges
    assert bmap["image_size"] == len(content)
    assert bmap["sha256"] == sha(content)  # holes hash as zeros
    for r in bmap["ranges"]:
        assert r["sha256"] == sha(content[r["start"] : r["end"]])
    # every byte outside the ranges is zero
    outside = bytearray(content)
    for r in bmap["ranges"]:
        outside[r["start"] : r["end"]] = bytes(r["end"] - r["start"])
    assert not any(outside)


def test_bmap_json_shape() -> None:
    bmap = build([B, D1, 3 * B])
    assert set(bmap) == {"version", "block_size", "image_size", "sha256", "ranges"}
    assert bmap["version"] == 1 and bmap["block_size"] == 4096
    assert all(set(r) == {"start", "end", "sha256"} for r in bmap["ranges"])
    assert json.loads(json.dumps(bmap)) == bmap
    assert validate_bmap(bmap) == []
    assert data_bytes(bmap) == 2 * B


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda m: m.update(version=2), "version"),
        (lambda m: m.update(image_size=-1), "image_size"),
        (lambda m: m.update(image_size=True), "image_size"),  # JSON true is not a size (the writer's rule)
        (lambda m: m.update(sha256="xyz"), "sha256"),
        (lambda m: m.update(ranges="no"), "ranges"),
        (lambda m: m["ranges"].append({"start": 0, "end": 1, "sha256": "0" * 64}), "order"),
        (lambda m: m["ranges"].append({"start": 10**9, "end": 10**9 + 1, "sha256": "0" * 64}), "past"),
        (lambda m: m["ranges"][0].update(end=m["ranges"][0]["start"]), "start < end"),
        (lambda m: m["ranges"][0].update(sha256=None), "sha256"),
    ],
)
def test_validate_bmap_problems(mutate: Any, problem: str) -> None:
    bmap = build([B, D1, 3 * B])
    mutate(bmap)
    problems = validate_bmap(bmap)
    assert problems and any(problem in p for p in problems), problems


def test_validate_bmap_is_the_shared_core_rule() -> None:
    """One source: the service's validator is provisioner.core.bmap_rules's (also shipped to the writer)."""
    from provisioner.core import bmap_rules

    assert validate_bmap is bmap_rules.validate_bmap


def test_builder_rejects_off_grid_then_more() -> None:
    b = BmapBuilder()
    b.feed(b"x" * 100)
    with pytest.raises(ValueError):
        b.feed(b"y")


def test_bmap_from_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "img.raw"
    rnd = random.Random(3)
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(5 * MiB)
        f.write(rnd.randbytes(3 * MiB))
        f.seek(20 * MiB)
        f.write(bytes(MiB))  # allocated zeros
        f.seek(30 * MiB + 10)
        f.write(b"z")  # one byte, mid-block
    bmap = bmap_from_file(path)
    content = path.read_bytes()
    assert bmap["sha256"] == sha(content)
    assert [(r["start"], r["end"]) for r in bmap["ranges"]] == [(5 * MiB, 8 * MiB), (30 * MiB, 30 * MiB + B)]
    for r in bmap["ranges"]:
        assert r["sha256"] == sha(content[r["start"] : r["end"]])


def test_data_extents_reports_allocation(tmp_path: Path) -> None:
    path = tmp_path / "img.raw"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
        f.seek(4 * MiB)
        f.write(b"a" * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = list(data_extents(fd, 16 * MiB))
    finally:
        os.close(fd)
    # filesystems may allocate a little around the write, but never miss it nor report everything
    assert any(s <= 4 * MiB and e >= 5 * MiB for s, e in extents)
    assert sum(e - s for s, e in extents) < 16 * MiB


def test_empty_and_fully_sparse_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    hole = tmp_path / "hole.raw"
    with open(hole, "wb") as f:
        f.truncate(10 * MiB)
    assert bmap_from_file(empty)["ranges"] == [] and bmap_from_file(empty)["image_size"] == 0
    bmap = bmap_from_file(hole)
    assert bmap["ranges"] == [] and bmap["sha256"] == sha(bytes(10 * MiB))
