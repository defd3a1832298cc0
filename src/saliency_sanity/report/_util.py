"""Escaping and formatting helpers shared by the report's sections.

Example:
    >>> e("<a & b>"), _num(float("nan")), _num(0.12345)
    ('&lt;a &amp; b&gt;', '&ndash;', '0.123')
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def e(x: Any) -> str:
    """Escape any value for HTML text and attributes."""
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return e(x)
    if math.isnan(v):
        return "&ndash;"
    if math.isinf(v):
        return "&infin;" if v > 0 else "&minus;&infin;"
    return f"{v:.{digits}f}"


def _ci(lo: Any, hi: Any) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = (),
           numeric: Sequence[bool] = ()) -> str:
    """An HTML table; cells are already-escaped HTML snippets."""
    h = "".join(f"<th>{c}</th>" for c in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        cells = "".join(
            f'<td class="num">{c}</td>' if (j < len(numeric) and numeric[j]) else f"<td>{c}</td>"
            for j, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"
