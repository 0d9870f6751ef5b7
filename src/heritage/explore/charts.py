"""Small server-rendered SVG charts: no JavaScript library, no CDN, readable offline.

Each function returns an ``<svg>`` string whose every text passes through ``html.escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

__all__ = ["bars_svg", "histogram_svg"]

CATALOGUED_COLOUR = "#3b6ea5"
PREDICTED_COLOUR = "#d9822b"


def bars_svg(rows: Sequence[tuple[str, int, int]], width: int = 260, title: str = "") -> str:
    """Horizontal paired bars: per value, catalogued (blue) and predicted (orange) counts."""
    if not rows:
        return ""
    top = max(max(c, p) for _, c, p in rows) or 1
    label_w, bar_h, gap = 90, 6, 5
    span = width - label_w - 34
    height = len(rows) * (2 * bar_h + gap) + 4
    parts = [
        f"<svg class='chart' role='img' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><title>{escape(title)}</title>"
    ]
    y = 2
    for label, cat, pred in rows:
        short = label if len(label) <= 14 else label[:13] + "…"
        parts.append(
            f"<text x='{label_w - 4}' y='{y + bar_h + 2}' text-anchor='end' "
            f"font-size='9'>{escape(short)}</text>"
        )
        for k, (count, colour) in enumerate(((cat, CATALOGUED_COLOUR), (pred, PREDICTED_COLOUR))):
            w = span * count / top
            yy = y + k * bar_h
            parts.append(
                f"<rect x='{label_w}' y='{yy}' width='{w:.1f}' height='{bar_h - 1}' "
                f"fill='{colour}'><title>{count}</title></rect>"
            )
            if count:
                parts.append(
                    f"<text x='{label_w + w + 3:.1f}' y='{yy + bar_h - 1}' "
                    f"font-size='7'>{count}</text>"
                )
        y += 2 * bar_h + gap
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    values: np.ndarray, threshold: float | None = None, bins: int = 20, width: int = 320,
    height: int = 90, title: str = "",
) -> str:  # fmt: skip
    """A histogram of confidences in [0, 1], the threshold drawn as a line."""
    counts, _ = np.histogram(np.asarray(values, float), bins=bins, range=(0.0, 1.0))
    top = int(counts.max()) if len(counts) and counts.max() > 0 else 1
    plot_h = height - 16
    bar_w = (width - 10) / bins
    parts = [
        f"<svg class='chart' role='img' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'><title>{escape(title)}</title>"
    ]
    for k, count in enumerate(counts):
        h = plot_h * count / top
        x = 5 + k * bar_w
        lo, hi = k / bins, (k + 1) / bins
        parts.append(
            f"<rect x='{x:.1f}' y='{plot_h - h:.1f}' width='{bar_w - 1:.1f}' height='{h:.1f}' "
            f"fill='{PREDICTED_COLOUR}'><title>{lo:.2f}–{hi:.2f}: {count}</title></rect>"
        )
    if threshold is not None:
        x = 5 + (width - 10) * float(np.clip(threshold, 0, 1))
        parts.append(
            f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{plot_h}' stroke='#222' "
            "stroke-dasharray='3,2'/>"
        )
    for tick in (0.0, 0.5, 1.0):
        x = 5 + (width - 10) * tick
        parts.append(
            f"<text x='{x:.1f}' y='{height - 3}' font-size='9' text-anchor='middle'>{tick:g}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
