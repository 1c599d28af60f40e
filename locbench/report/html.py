"""Rendering primitives shared by the Markdown and the self-contained HTML report.

A report is a list of :class:`Section`; each holds the same content twice, as Markdown and as HTML, so other
parts (error analysis) can add a section without knowing how the page is assembled.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from locbench.tables import html_escape, html_table, markdown_table


@dataclass(frozen=True)
class Section:
    """One report section: a title, its Markdown body and its HTML body (no outer heading in either)."""

    title: str
    markdown: str
    html: str


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #e3e6eb; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.sub { color: #5b6475; margin-top: 0; }
.how { background: #eef4fb; border-left: 4px solid #2c7fb8; padding: 10px 16px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.84em; margin: 8px 0 16px; }
th, td { border: 1px solid #dde1e7; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f2f5; }
td.l, th.l { text-align: left; }
tr.base td { background: #fff8e1; }
tr.best td { font-weight: 600; }
.scroll { overflow-x: auto; }
ul.findings li { margin: 4px 0; padding: 3px 8px; list-style: none; border-left: 4px solid #c9ced6; }
ul.findings li.sig { border-left-color: #2ca02c; background: #f1faf1; }
ul.findings { padding-left: 0; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.muted { color: #6b7385; font-size: 0.9em; }
details { margin: 8px 0; }
code { background: #f0f2f5; padding: 0 3px; border-radius: 3px; }
nav a { margin-right: 12px; font-size: 0.9em; }
.strip { display: flex; align-items: flex-start; gap: 16px; border-top: 1px solid #e3e6eb; padding: 8px 0; }
.strip-head { flex: 0 0 14em; font-size: 0.88em; font-weight: 600; }
.strip-body { flex: 1; display: flex; flex-wrap: wrap; gap: 8px 18px; }
.strip-group { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.kind { writing-mode: vertical-rl; transform: rotate(180deg); font-size: 0.75em; color: #6b7385; }
.fn, .kind.fn { color: #b22222; } .fp, .kind.fp { color: #b35900; }
figure.thumb { margin: 0; width: 164px; font-size: 0.72em; text-align: center; color: #3b4252; }
figure.thumb img { display: inline-block; width: 80px; height: 80px; margin: 0 1px; border-radius: 2px; }
figure.thumb .noimg { width: 162px; height: 80px; background: #eef0f3; line-height: 80px; color: #6b7385; }
figure.thumb figcaption { overflow-wrap: anywhere; }
"""


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    left: int = 1,
    row_classes: Sequence[str] | None = None,
) -> tuple[str, str]:
    """The same table as Markdown and as HTML (for a :class:`Section`); the first ``left`` columns are labels."""
    md = markdown_table(headers, rows, left=left) + "\n"
    return md, html_table(headers, rows, left=left, row_classes=row_classes)


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as base64, so the page opens offline as a single file."""
    return f'<img alt="{html_escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def para(text: str) -> tuple[str, str]:
    return text + "\n\n", f"<p>{html_escape(text)}</p>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """A complete HTML document: inline CSS, no external resources."""
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = "".join(f'<a href="#{a}">{html_escape(s.title)}</a>' for a, s in zip(anchors, sections, strict=True))
    body = "".join(
        f'<section id="{a}"><h2>{html_escape(s.title)}</h2>{s.html}</section>'
        for a, s in zip(anchors, sections, strict=True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html_escape(title)}</title>'
        f"<style>{CSS}</style></head><body><main><h1>{html_escape(title)}</h1>"
        f'<p class="sub">{html_escape(subtitle)}</p>'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def markdown(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The Markdown report (tables and text; figures live in the HTML page)."""
    out = [f"# {title}\n", f"{subtitle}\n"]
    for s in sections:
        out.append(f"## {s.title}\n\n{s.markdown.rstrip()}\n")
    return "\n".join(out)
