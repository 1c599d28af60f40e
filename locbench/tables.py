"""The one table renderer: the same rows as Markdown, as HTML or as aligned plain text.

Reports, the error analysis, the localization check and the benchmarks all render their tables here, so escaping
and alignment are decided once. Cells are printed with ``str``; format numbers before passing them in.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["html_escape", "html_table", "markdown_escape", "markdown_table", "text_table"]


def html_escape(value: object) -> str:
    """``str(value)`` with ``& < > " '`` escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)


def markdown_escape(value: object) -> str:
    """``str(value)`` safe inside a Markdown table cell (``|`` escaped, line breaks folded to spaces)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[object], rows: Sequence[Sequence[object]], *, left: int | None = 1) -> str:
    """A Markdown (GitHub) table, one line per row, without a trailing newline.

    Args:
        headers: Column titles.
        rows: One sequence of cells per row.
        left: The first ``left`` columns are marked left-aligned and the others right-aligned (labels, then
            numbers); ``None`` leaves the alignment to the viewer (a plain ``---`` under every column).
    """
    if left is None:
        rule = "|" + "|".join("---" for _ in headers) + "|"
    else:
        rule = "|" + "|".join(":---" if i < left else "---:" for i in range(len(headers))) + "|"
    lines = ["| " + " | ".join(markdown_escape(h) for h in headers) + " |", rule]
    lines += ["| " + " | ".join(markdown_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(
    headers: Sequence[object],
    rows: Sequence[Sequence[object]],
    *,
    left: int = 1,
    row_classes: Sequence[str] | None = None,
    table_class: str | None = None,
    scroll: bool = True,
) -> str:
    """An HTML ``<table>`` (one line, every cell escaped).

    Args:
        headers: Column titles.
        rows: One sequence of cells per row.
        left: The first ``left`` columns get ``class="l"`` (left-aligned labels in the report's CSS).
        row_classes: A CSS class per row (empty for none), e.g. ``base`` or ``best``.
        table_class: A CSS class of the ``<table>`` itself.
        scroll: Wrap the table in ``<div class="scroll">`` so a wide table scrolls sideways.
    """

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    opening = f'<table class="{html_escape(table_class)}">' if table_class else "<table>"
    parts = [opening, "<thead><tr>"]
    parts += [f"<th{cls(i)}>{html_escape(h)}</th>" for i, h in enumerate(headers)]
    parts.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        rc = row_classes[k] if row_classes and row_classes[k] else ""
        parts.append(f'<tr class="{rc}">' if rc else "<tr>")
        parts += [f"<td{cls(i)}>{html_escape(c)}</td>" for i, c in enumerate(row)]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    out = "".join(parts)
    return f'<div class="scroll">{out}</div>' if scroll else out


def text_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """Plain text for a terminal: columns padded to one width, the first left-aligned, the others right-aligned."""
    head = [str(h) for h in headers]
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[k]) for r in body)) if body else len(h) for k, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join(line(r) for r in [head, *body])
