"""Rendering primitives shared by the Markdown and the self-contained HTML report.

A report is a list of :class:`Section`; each holds the same content twice, as Markdown and as HTML, so other
parts (error analysis) can add a section without knowing how the page is assembled.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass


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
"""


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def md_escape(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    left: int = 1,
    row_classes: Sequence[str] | None = None,
) -> tuple[str, str]:
    """The same table as Markdown and as HTML; the first ``left`` columns are left-aligned (labels)."""
    md = [
        "| " + " | ".join(md_escape(h) for h in headers) + " |",
        "|" + "|".join(":---" if i < left else "---:" for i in range(len(headers))) + "|",
    ]
    md += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    h = ['<div class="scroll"><table><thead><tr>']
    h += [f"<th{cls(i)}>{esc(x)}</th>" for i, x in enumerate(headers)]
    h.append("</tr></thead><tbody>")
    for k, r in enumerate(rows):
        rc = row_classes[k] if row_classes and row_classes[k] else ""
        h.append(f'<tr class="{rc}">' if rc else "<tr>")
        h += [f"<td{cls(i)}>{esc(x)}</td>" for i, x in enumerate(r)]
        h.append("</tr>")
    h.append("</tbody></table></div>")
    return "\n".join(md) + "\n", "".join(h)


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as base64, so the page opens offline as a single file."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def para(text: str) -> tuple[str, str]:
    return text + "\n\n", f"<p>{esc(text)}</p>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """A complete HTML document: inline CSS, no external resources."""
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = "".join(f'<a href="#{a}">{esc(s.title)}</a>' for a, s in zip(anchors, sections, strict=True))
    body = "".join(
        f'<section id="{a}"><h2>{esc(s.title)}</h2>{s.html}</section>' for a, s in zip(anchors, sections, strict=True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f'<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def markdown(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The Markdown report (tables and text; figures live in the HTML page)."""
    out = [f"# {title}\n", f"{subtitle}\n"]
    for s in sections:
        out.append(f"## {s.title}\n\n{s.markdown.rstrip()}\n")
    return "\n".join(out)
