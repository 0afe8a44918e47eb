"""A serial console log's end as readable text: what a boot timeout attaches to its job. Pure.

A console log is what the machine wrote to its serial port: firmware and boot-loader screens full of
terminal escape sequences (cursor moves, colours, clear-screen), carriage returns, the odd NUL, and
bytes of any encoding. Readers of a job want the last lines as text."""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL/ST), charset choice, and two-byte ESC sequences (ESC c resets).
_ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[0-~]")
# Control bytes other than tab and newline (a carriage return is handled first).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def readable(raw: bytes) -> str:
    """The text a terminal would leave on its lines, one per line, escapes and controls removed."""
    text = _ESCAPES.sub(b"", raw).decode("utf-8", errors="replace")
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        # A bare carriage return rewrites the line from its start: what is left is the last rewrite.
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
        lines.append(_CONTROLS.sub("", line).rstrip())
    return "\n".join(lines)


def last_lines(raw: bytes, *, max_lines: int, max_chars: int) -> tuple[str, int]:
    """The last non-blank lines of a log's end (at most `max_lines`, `max_chars` in all), and how
    many lines that is. `raw` may start mid-line (the read began at an offset): that line is dropped
    unless it is all there is."""
    lines = readable(raw).split("\n")
    if len(lines) > 1:
        lines = lines[1:]
    kept: list[str] = []
    size = 0
    for line in reversed([ln for ln in lines if ln.strip()]):
        if len(kept) >= max_lines or size + len(line) + 1 > max_chars:
            break
        kept.append(line)
        size += len(line) + 1
    kept.reverse()
    return "\n".join(kept), len(kept)
