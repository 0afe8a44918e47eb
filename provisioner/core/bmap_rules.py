"""The rules of a block map ("bmap"), shared by the service and the image writer.

ONE source for both sides: the service imports it as ``provisioner.core.bmap_rules`` (through
provisioner.imaging.bmap), and the writer module, which runs on the target host, imports it as
``ansible.module_utils.prov_bmap``: playbooks/module_utils/prov_bmap.py is a relative symlink to
this file and Ansible ships its content inside the module's payload.

So this file must stay pure and self-contained: Python stdlib only (nothing at all is imported
today), no import from ``provisioner``, no I/O, and syntax the target hosts' python3 understands.

Shape of a bmap (JSON-serialisable, ``end`` exclusive, all numbers in bytes)::

    {"version": 1, "block_size": 4096, "image_size": N, "sha256": "<hex of the full raw content>",
     "ranges": [{"start": 0, "end": 1048576, "sha256": "<hex>"}, ...]}
"""

from __future__ import annotations

BMAP_VERSION = 1


def validate_bmap(bmap: object) -> list[str]:
    """Problems with a bmap dict (empty list when it is well formed)."""
    if not isinstance(bmap, dict):
        return ["bmap is not an object"]
    problems: list[str] = []
    if bmap.get("version") != BMAP_VERSION:
        problems.append(f"unsupported bmap version {bmap.get('version')!r}")
    size = bmap.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:  # JSON true is not a size
        problems.append("image_size must be a non-negative integer")
        size = None
    if not is_hex_digest(bmap.get("sha256")):
        problems.append("sha256 must be a 64-char hex digest")
    ranges = bmap.get("ranges")
    if not isinstance(ranges, list):
        return problems + ["ranges must be a list"]
    prev_end = 0
    for i, r in enumerate(ranges):
        if not isinstance(r, dict):
            problems.append(f"range {i} is not an object")
            continue
        start, end = r.get("start"), r.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            problems.append(f"range {i} needs integers 0 <= start < end")
            continue
        if start < prev_end:
            problems.append(f"range {i} {fmt_range(start, end)} overlaps or is out of order")
        if size is not None and end > size:
            problems.append(f"range {i} {fmt_range(start, end)} ends past image_size {size}")
        if not is_hex_digest(r.get("sha256")):
            problems.append(f"range {i} sha256 must be a 64-char hex digest")
        prev_end = max(prev_end, end)
    return problems


def is_hex_digest(value: object) -> bool:
    """A sha256 hex digest: 64 characters that parse as hexadecimal."""
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def fmt_range(start: int, end: int) -> str:
    """How messages name a range: half-open, ``[start, end)``."""
    return f"[{start}, {end})"


def holes_of(ranges: list[tuple[int, int]], size: int, skip_below: int = 0) -> list[tuple[int, int]]:
    """Complement of sorted data ranges within [skip_below, size)."""
    holes = []
    pos = skip_below
    for start, end in ranges:
        if start > pos:
            holes.append((pos, min(start, size)))
        pos = max(pos, end)
    if pos < size:
        holes.append((pos, size))
    return [(a, b) for a, b in holes if b > a]
