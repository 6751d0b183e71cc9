"""Small SVG charts for the model page, drawn here (no plotting library in the serving image, no script):
horizontal bars and a confusion heat map. Every mark carries its number as text and a <title>, the page
prints the same numbers beside the chart, and colours are never the only carrier of meaning."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

FONT = 'font-family="system-ui, sans-serif" font-size="12"'
BAR, AGREE, DISAGREE, MUTED = "#2f6f9f", "#2e7d32", "#c0562b", "#888"


def _clip(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def bars(rows: Sequence[tuple[str, float | None, str]], title: str, max_value: float = 1.0,
         fmt: Callable[[float], str] = lambda v: f"{v * 100:.1f} %", width: int = 560) -> Markup:
    """One bar per (label, value, note); value None draws no bar and says 'no data'."""
    label_w, pad, row_h = 190, 8, 24
    plot_w = width - label_w - 130
    height = pad * 2 + 14 + row_h * max(1, len(rows)) - 6
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {FONT}>', f"<title>{escape(title)}</title>"]
    top = pad + 14
    out.append(f'<line x1="{label_w}" y1="{pad}" x2="{label_w}" y2="{height - pad}" stroke="{MUTED}"/>')
    for i, (label, value, note) in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 4}" text-anchor="end"><title>{escape(label)}</title>'
                   f"{escape(_clip(label))}</text>")
        if value is None:
            out.append(f'<text x="{label_w + 6}" y="{y + 4}" fill="{MUTED}">no data {escape(note)}</text>')
            continue
        w = max(1.0, plot_w * min(value, max_value) / max_value) if max_value else 1.0
        out.append(f'<rect x="{label_w}" y="{y - 8}" width="{w:.1f}" height="14" fill="{BAR}">'
                   f"<title>{escape(label)}: {escape(fmt(value))} {escape(note)}</title></rect>")
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 4}">{escape(fmt(value))} '
                   f'<tspan fill="{MUTED}">{escape(note)}</tspan></text>')
    out.append("</svg>")
    return Markup("".join(out))


def heatmap(rows: Sequence[str], cols: Sequence[str], counts: dict[tuple[str, str], int], title: str) -> Markup:
    """Model's department (rows) x curator's department (columns); the diagonal is agreement."""
    cell, label_w, head_h = 34, 170, 130
    width, height = label_w + cell * max(1, len(cols)) + 90, head_h + cell * max(1, len(rows)) + 10
    top = max(counts.values(), default=0) or 1
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {FONT}>', f"<title>{escape(title)}</title>"]
    for j, col in enumerate(cols):
        x = label_w + j * cell + cell / 2
        out.append(f'<text transform="translate({x:.0f},{head_h - 6}) rotate(-55)"><title>curator: {escape(col)}'
                   f"</title>{escape(_clip(col, 22))}</text>")
    for i, row in enumerate(rows):
        y = head_h + i * cell
        out.append(f'<text x="{label_w - 6}" y="{y + cell / 2 + 4:.0f}" text-anchor="end"><title>model: '
                   f"{escape(row)}</title>{escape(_clip(row, 24))}</text>")
        for j, col in enumerate(cols):
            n = counts.get((row, col), 0)
            x = label_w + j * cell
            colour = AGREE if row == col else DISAGREE
            opacity = 0.08 + 0.92 * n / top if n else 0.0
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{colour}" '
                       f'fill-opacity="{opacity:.2f}" stroke="#ddd"><title>model {escape(row)}, curator '
                       f"{escape(col)}: {n}</title></rect>")
            if n:
                ink = "#fff" if opacity > 0.55 else "#000"
                out.append(f'<text x="{x + cell / 2 - 1:.0f}" y="{y + cell / 2 + 3:.0f}" text-anchor="middle" '
                           f'fill="{ink}">{n}</text>')
    out.append("</svg>")
    return Markup("".join(out))
