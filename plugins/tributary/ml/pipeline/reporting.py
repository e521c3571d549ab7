"""Report folders and the small HTML toolkit the validation and analysis reports share.

Every run writes to ``<TRIBUTARY_REPORTS_DIR>/ml_pipelines/<pipeline>/<partition>/<run>/``: a
self-contained HTML page (images are files next to it) and a JSON twin for machines.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tributary.ml.pipeline.assets import run_slug

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;font-size:.9rem;vertical-align:top}th{background:#f3f3f3}.ok{color:#176b2c}.bad{color:#b00020;
font-weight:600}.warn{color:#a15c00}code{background:#f6f6f6;padding:0 .2rem}img{max-width:100%}
"""


def report_dir(pipeline: str, partition: str, run_id: str) -> Path:
    from tributary.platform.reports import reports_dir

    folder = reports_dir() / "ml_pipelines" / pipeline / partition / run_slug(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw_columns: frozenset[int] = frozenset()) -> str:
    """An HTML table; cells are escaped except the columns in ``raw_columns`` (already HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell if i in raw_columns else esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def verdict(ok: bool, good: str = "passed", bad: str = "failed") -> str:
    return f'<span class="ok">{esc(good)}</span>' if ok else f'<span class="bad">{esc(bad)}</span>'


def write_page(path: Path, title: str, sections: Sequence[str]) -> Path:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>{''.join(sections)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def write_json(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path
