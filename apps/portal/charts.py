"""Usage charts as server-rendered SVG: pure functions from a series to markup.

Hand-written on purpose: a chart library (matplotlib, pygal) would add a heavy dependency
or client-side script for two small charts; the portal ships no JS framework and no CDN.
The markup is plain SVG with a <title> per mark (read by screen readers and shown as a
tooltip) and every text escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 400, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 12, 26  # room for the axis labels


@dataclass(frozen=True)
class Point:
    """One bucket: its label (e.g. "14:00") and its value (an integer; None: no reading)."""

    label: str
    value: int | None


def _scale_max(values: list[int]) -> int:
    """A round top for the axis, at least 1 (an all-zero series still draws an axis)."""
    top = max(values, default=0)
    if top <= 0:
        return 1
    magnitude = 10 ** (len(str(top)) - 1)
    for step in (1, 2, 5, 10):
        if top <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _frame(title: str, top: int, unit: str, body: list[str], points: list[Point]) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    base = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 10}" text-anchor="end">{top:,}</text>',
        f'<text x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
    ]
    if unit:
        parts.append(f'<text x="2" y="{TOP + 30}">{escape(unit)}</text>')
    if points:
        # First, middle and last bucket labels: enough to read the time axis at 375 px.
        n = len(points)
        for index in sorted({0, n // 2, n - 1}):
            x = LEFT + plot_w * (index + 0.5) / n
            label = escape(points[index].label)
            # the first and last labels lean inwards so that they are not cut at the edges
            anchor = "start" if index == 0 and n > 1 else "end" if index == n - 1 and n > 1 else "middle"
            x = LEFT if anchor == "start" else WIDTH - RIGHT if anchor == "end" else x
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}">{label}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(points: list[Point], *, title: str, unit: str = "") -> str:
    """One bar (rect) per point, heights proportional to the values on a 0-based axis."""
    values = [max(0, int(p.value or 0)) for p in points]
    top = _scale_max(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    body = []
    if points:
        slot = plot_w / len(points)
        bar_w = max(1.0, slot * 0.8)
        for index, (point, value) in enumerate(zip(points, values, strict=True)):
            h = plot_h * value / top
            x = LEFT + slot * index + (slot - bar_w) / 2
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(point.label)}: {value:,} {escape(unit)}</title></rect>"
            )
    return _frame(title, top, unit, body, points)


def line_chart(points: list[Point], *, title: str, unit: str = "") -> str:
    """A level over time (storage): a path through the points; a point without a reading
    (value None) is a gap in the line, not a fall to zero."""
    values = [None if p.value is None else max(0, int(p.value)) for p in points]
    top = _scale_max([v for v in values if v is not None])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    body = []
    if points:
        slot = plot_w / len(points)
        segments: list[list[str]] = [[]]
        for i, (point, value) in enumerate(zip(points, values, strict=True)):
            if value is None:
                segments.append([])
                continue
            x, y = LEFT + slot * (i + 0.5), base - plot_h * value / top
            segments[-1].append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(point.label)}: {value:,} {escape(unit)}</title></circle>"
            )
        d = " ".join("M" + " L".join(seg) for seg in segments if seg)
        if d:
            body.insert(0, f'<path class="line" d="{d}" fill="none"/>')
    return _frame(title, top, unit, body, points)
