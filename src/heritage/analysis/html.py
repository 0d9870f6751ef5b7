"""A self-contained HTML page: inline CSS, PNGs as base64 ``data:`` URIs, no scripts, no
external assets, so a report opens from disk in any browser, offline, and can be mailed as
one file."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["esc", "figure", "page", "png_data_uri", "table"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
     margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.box { padding: .6em 1em; border-radius: 4px; margin: 1em 0; }
.skipped { background: #fff4d6; border: 1px solid #e6c25c; }
.note { background: #eef4fb; border: 1px solid #9cbde0; }
.finding { background: #eefbf0; border: 1px solid #8fcf9b; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
        gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: .4em; font-size: .8em;
        text-align: center; word-break: break-word; }
.card img { max-width: 128px; max-height: 128px; display: block; margin: 0 auto .3em; }
.small { font-size: .85em; color: #555; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: str | Path, caption: str) -> str:
    """An embedded PNG with a caption (the file itself stays beside the report)."""
    return (
        f'<figure><img src="{png_data_uri(path)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return esc("" if value is None else value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{0.0 if abs(value) < 0.5 * 10**-digits else value:.{digits}f}"  # no "-0.000"
    return esc(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """An HTML table; floats to ``digits`` decimals, everything escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v, digits)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
