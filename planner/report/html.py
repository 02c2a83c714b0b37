"""HTML building blocks for the report: escaping, number formats, tables, embedded figures, CSS."""
from __future__ import annotations

import base64
import html
import math
from typing import Any

from planner.core.io import json_default
from planner.report.figures import to_png


# ------------------------------------------------------------------------------ formatting
def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt_num(x: Any, fmt: str = ".4g") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-" if x is None else esc(x)
    if not math.isfinite(v):
        return "-"
    return format(v, fmt)


def fmt_pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{100 * v:.1f} %"


def html_table(header: list[str], rows: list[list[Any]], row_classes: list[str] | None = None,
           cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are ``RawHTML``."""
    out = [f'<table class="{esc(cls)}"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        rc = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        out += [f"<td>{c if isinstance(c, RawHTML) else esc(c)}</td>" for c in r]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class RawHTML(str):
    """HTML that is already safe."""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def fig_html(fig, alt: str) -> str:
    return _img(to_png(fig), alt)


def para(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def warn_list(items: list[str], cls: str = "warnings") -> str:
    if not items:
        return ""
    return f'<ul class="{esc(cls)}">' + "".join(f"<li>{esc(w)}</li>" for w in items) + "</ul>"


def lenient_json(o):
    """``json.dumps(default=...)`` for the report: numpy values converted, anything else as text."""
    try:
        return json_default(o)
    except TypeError:
        return str(o)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fff;line-height:1.4}
header{background:#1f3b57;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px 0;font-size:24px}
header p{margin:0;color:#d6e2ee;font-size:13px}
nav{padding:8px 28px;background:#eef2f6;font-size:13px;border-bottom:1px solid #d0d7de}
nav a{margin-right:14px;color:#1f3b57;text-decoration:none}
main{padding:8px 28px 40px 28px;max-width:1400px}
section{border-bottom:1px solid #e3e6ea;padding:10px 0 18px 0}
h2{font-size:19px;color:#1f3b57;margin:14px 0 8px 0}
h3{font-size:15px;color:#1f3b57;margin:12px 0 4px 0}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}
table.facts td:first-child{font-weight:600;background:#f8f9fa}
tr.imported td{background:#fff8e6}
tr.failed td{color:#a00}
tr.binding td{background:#fdecea}
.badge{display:inline-block;padding:0 6px;border-radius:8px;background:#e6eef7;font-size:12px}
.badge.imported{background:#ffd98a}
.badge.tell{background:#d4f1d4}
.badge.validation{background:#e3d4f1}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.note{color:#555;font-style:italic}
.trust-low{background:#fde8e8;border:2px solid #b00;padding:8px 12px;margin:0 0 12px}
.warn{color:#8a4b00}
.good{color:#1a6b1a}
.headline{font-size:16px}
ul.warnings li{color:#8a4b00}
.section-error{color:#a00;font-weight:600}
.scroll{overflow-x:auto}
"""
