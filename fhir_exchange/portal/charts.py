"""Charts drawn on the server as SVG, so the dashboard needs no chart library and no script.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (read by screen readers),
scales to its container (``viewBox``), and uses the Okabe-Ito palette, which stays distinguishable
for the common colour-vision deficiencies; every figure also appears in a table beside the chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
INK = "#1a1a1a"
GRID = "#d0d0d0"


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (a readable axis top)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value * 10:
        step /= 10
    for m in (1, 2, 5, 10):
        if step * m >= value:
            return step * m
    return step * 10


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def stacked_bars(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                 width: int = 720, height: int = 300) -> Markup:
    """Vertical bars, one per category (a week), stacked by series (a hub - partner pair), with a legend."""
    left, right, top, bottom = 40, 10, 10, 40
    legend_h = 18 * len(series)
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[1][i] for s in series) for i in range(len(categories))]
    most = max(totals, default=0)
    top_value = float(max(4, math.ceil(most / 4) * 4))  # counts: four whole-number steps up the axis
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height + legend_h}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
           f"<desc>{escape(', '.join(f'{c}: {_num(t)}' for c, t in zip(categories, totals, strict=True)))}</desc>"]
    for i in range(5):
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{INK}">'
                   f"{_num(v)}</text>")
    slot = plot_w / max(len(categories), 1)
    bar = slot * 0.6
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for k, (name, values) in enumerate(series):
            h = plot_h * values[i] / top_value
            if h > 0:
                y -= h
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                           f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(name)} {escape(category)}: '
                           f"{_num(values[i])}</title></rect>")
        out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11" '
                   f'fill="{INK}">{escape(category)}</text>')
    for k, (name, _) in enumerate(series):
        y = height + 18 * k
        out.append(f'<rect x="{left}" y="{y - 10}" width="12" height="12" fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{left + 18}" y="{y}" font-size="12" fill="{INK}">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def horizontal_bars(title: str, rows: Sequence[tuple[str, Sequence[float | None]]], legend: Sequence[str],
                    width: int = 720, label_width: int = 260) -> Markup:
    """One group of horizontal bars per row (a hub - partner pair), one bar per legend entry (median,
    90th percentile, ...); a missing value draws no bar."""
    bar_h, gap = 14, 10
    group_h = bar_h * max(len(legend), 1) + gap
    height = 20 + group_h * len(rows) + 20 * len(legend)
    plot_w = width - label_width - 60
    top_value = _nice_max(max((v for _, vs in rows for v in vs if v is not None), default=0))
    values_text = "; ".join(f"{label}: " + ", ".join(f"{name} {_num(v) if v is not None else '-'}"
                                                    for name, v in zip(legend, vs, strict=True))
                            for label, vs in rows)
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
           f"<title>{escape(title)}</title><desc>{escape(values_text)}</desc>"]
    for i, (label, values) in enumerate(rows):
        y0 = 10 + group_h * i
        out.append(f'<text x="{label_width - 6}" y="{y0 + group_h / 2:.1f}" text-anchor="end" font-size="12" '
                   f'fill="{INK}">{escape(label)}</text>')
        for k, v in enumerate(values):
            if v is None:
                continue
            w = plot_w * v / top_value
            y = y0 + bar_h * k
            out.append(f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(label)} {escape(legend[k])}: '
                       f"{_num(v)}</title></rect>"
                       f'<text x="{label_width + w + 4:.1f}" y="{y + bar_h - 4}" font-size="11" fill="{INK}">'
                       f"{_num(v)}</text>")
    for k, name in enumerate(legend):
        y = 10 + group_h * len(rows) + 20 * k + 10
        out.append(f'<rect x="{label_width}" y="{y - 10}" width="12" height="12" fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{label_width + 18}" y="{y}" font-size="12" fill="{INK}">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
