"""Small server-side SVG charts for the dashboard: bars and lines drawn from numbers, no JavaScript.

Every text that reaches the SVG is escaped here; the template marks the result safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 560
PALETTE = ("#3b6fd8", "#d8843b", "#2f9e57", "#9b4fd1", "#c23b5a", "#3bb0c2")


def _svg(height: int, body: list[str], label: str, width: int = WIDTH) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="12">'
            f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def hbars(items: Sequence[tuple[str, float | None, str]], *, label: str, lo: float = 0.0, hi: float = 1.0,
          good_at: float | None = None) -> str:
    """One horizontal bar per (name, value, text shown beside it), on a scale from lo to hi (values
    beyond are drawn at the edge, the text tells the truth). Bars below `good_at` are red."""
    left, right, row = 150, 90, 22
    span = WIDTH - left - right
    zero = left + span * (0 - lo) / (hi - lo) if lo < 0 < hi else left
    body = []
    for i, (name, value, text) in enumerate(items):
        y = 6 + i * row
        body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(name)}</text>')
        if value is not None:
            v = min(max(value, lo), hi)
            x = left + span * (v - lo) / (hi - lo)
            bad = good_at is not None and value < good_at
            body.append(f'<rect x="{min(x, zero):.1f}" y="{y}" width="{abs(x - zero):.1f}" height="14" '
                        f'fill="{"#c23b5a" if bad else PALETTE[0]}"/>')
        body.append(f'<text x="{WIDTH - right + 6}" y="{y + 12}">{escape(text)}</text>')
    body.append(f'<line x1="{zero:.1f}" y1="2" x2="{zero:.1f}" y2="{8 + len(items) * row}" stroke="#889"/>')
    return _svg(12 + len(items) * row, body, label)


def lines(series: Sequence[tuple[str, Sequence[float]]], *, label: str, x_labels: Sequence[str] = (),
          ceilings: Sequence[tuple[str, float]] = ()) -> str:
    """One line per (name, values), equally spaced; dashed horizontal `ceilings` (e.g. capacity)."""
    height, left, bottom, top, right = 200, 40, 24, 10, 120
    values = [v for _, vs in series for v in vs] + [c for _, c in ceilings] + [0.0]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    n = max((len(vs) for _, vs in series), default=1)
    plot_w, plot_h = WIDTH - left - right, height - top - bottom

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + plot_w * (i / max(1, n - 1)), top + plot_h * (1 - (v - lo) / (hi - lo))

    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#889"/>',
            f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{hi:g}</text>',
            f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{lo:g}</text>']
    if x_labels:
        body.append(f'<text x="{left}" y="{height - 6}">{escape(x_labels[0])}</text>')
        body.append(f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">{escape(x_labels[-1])}</text>')
    for k, (name, vs) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(vs)))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        body.append(f'<text x="{left + plot_w + 8}" y="{top + 14 + 16 * k}" fill="{color}">{escape(name)}</text>')
    for k, (name, c) in enumerate(ceilings):
        color = PALETTE[k % len(PALETTE)]
        _, y = xy(0, c)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{color}" '
                    f'stroke-dasharray="4 3"><title>{escape(name)}</title></line>')
    return _svg(height, body, label)


def vbars(items: Sequence[tuple[str, int]], *, label: str) -> str:
    """Vertical bars (e.g. the ratings' 1-5 distribution) with the count above each."""
    height, bottom, width = 140, 20, 60 * max(1, len(items)) + 20
    top = max([n for _, n in items] + [1])
    body = []
    for i, (name, n) in enumerate(items):
        h = (height - bottom - 20) * n / top
        x = 20 + i * 60
        body.append(f'<rect x="{x}" y="{height - bottom - h:.1f}" width="40" height="{h:.1f}" fill="{PALETTE[0]}"/>')
        body.append(f'<text x="{x + 20}" y="{height - bottom - h - 4:.1f}" text-anchor="middle">{n}</text>')
        body.append(f'<text x="{x + 20}" y="{height - 4}" text-anchor="middle">{escape(name)}</text>')
    return _svg(height, body, label, width=width)
