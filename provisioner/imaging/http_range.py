"""HTTP Range (RFC 9110 §14) for serving image bytes: one byte range per request. Pure.

* no header, a unit other than ``bytes``, or several ranges (``bytes=0-1,5-9``) → the whole content
  (a server may ignore Range; writers only ever ask for one range at a time);
* ``bytes=a-b``, ``bytes=a-``, ``bytes=-n`` → that range, clipped to the content;
* a range that starts at or past the end, ``bytes=-0``, or a malformed ``bytes=`` spec → unsatisfiable
  (the caller answers 416 with ``Content-Range: bytes */size``).
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) with end exclusive, or None for "serve everything"."""
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    m = _SPEC.match(spec)
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed range {header!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"empty suffix range {header!r}")
        return max(0, size - n), size
    start = int(first)
    if last and int(last) < start:
        raise RangeNotSatisfiable(f"range {header!r} ends before it starts")
    if start >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts at or past the end ({size} bytes)")
    end = size if not last else min(int(last) + 1, size)
    return start, end


def content_range(start: int, end: int, size: int) -> str:
    return f"bytes {start}-{end - 1}/{size}"
