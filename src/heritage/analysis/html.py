"""Self-contained HTML pages rendered from Jinja2 templates (``analysis/templates``): inline
CSS, PNGs as base64 ``data:`` URIs, no scripts, no external assets, so a report opens from
disk in any browser, offline, and can be mailed as one file. The Python side computes; the
templates only lay out (and escape) what it computed."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["cell", "png_data_uri", "render"]


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` decimals (NaN as –, never "-0.000"), None empty."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{0.0 if abs(value) < 0.5 * 10**-digits else value:.{digits}f}"
    return str(value)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("heritage.analysis", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
    )
    env.filters["cell"] = cell
    return env


def render(template: str, **context: Any) -> str:
    """The page ``template`` with ``context``; every value is HTML-escaped."""
    return _environment().get_template(template).render(**context)
