"""Pieces of the model page that are plain functions of data: Markdown made safe, and learning curves as SVG.

``render_markdown`` uses markdown-it-py (installed with rich, a core dependency) in CommonMark mode with raw
HTML off -- ``<script>`` in a card is shown as text -- images off (a page fetches nothing from elsewhere), and
only ``http://``/``https://`` links (anything else stays text), headings moved below the page's own. ``curve_charts`` draws each quantity of a
``History`` (``loss`` with ``val_loss``, ``accuracy`` with ``val_accuracy``, ...) as an inline SVG chart, built
here on the server: no script and no plotting library in the browser. Every text is escaped.
"""
from __future__ import annotations

import functools
import math
from html import escape
from typing import Any

MAX_MARKDOWN_CHARS = 100_000
MAX_CHARTS = 8
HEADING_SHIFT = 3  # a card's "# Title" becomes <h4>: the page's own headings keep h1-h3
NOT_CURVES = ("epoch", "step", "time", "lr")  # the x axis, or not a quantity to watch
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 420, 220, 58, 12, 14, 34


@functools.cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")
    parser.validateLink = lambda url: url.strip().lower().startswith(("http://", "https://"))

    def link_open(renderer: Any, tokens: list[Any], index: int, options: Any, env: Any) -> str:
        tokens[index].attrSet("rel", "nofollow noopener noreferrer")
        return renderer.renderToken(tokens, index, options, env)

    def heading(renderer: Any, tokens: list[Any], index: int, options: Any, env: Any) -> str:
        tokens[index].tag = f"h{min(6, int(tokens[index].tag[1:]) + HEADING_SHIFT)}"  # below the page's own h1-h3
        return renderer.renderToken(tokens, index, options, env)

    parser.add_render_rule("link_open", link_open)
    parser.add_render_rule("heading_open", heading)
    parser.add_render_rule("heading_close", heading)
    return parser


def render_markdown(text: str) -> str:
    """HTML for a card's Markdown text: raw HTML escaped, no images, http(s) links only."""
    text = text[:MAX_MARKDOWN_CHARS]
    try:
        parser = _markdown()
    except ImportError:  # markdown-it-py missing: the text as it is, escaped
        return f'<pre class="markdown">{escape(text)}</pre>'
    return parser.render(text)


def curve_charts(history: dict[str, list[Any]]) -> str:
    """One SVG chart per quantity of a column-wise history (``History.to_dict()``), training and validation
    together; empty when there is nothing to draw."""
    length = max((len(v) for v in history.values()), default=0)
    epochs = [e if _finite(e) else i + 1 for i, e in enumerate(_padded(history.get("epoch"), length))]
    groups: dict[str, list[str]] = {}
    for key in history:
        if key not in NOT_CURVES and any(_finite(v) for v in history[key]):
            groups.setdefault(key.removeprefix("val_"), []).append(key)
    charts = [_chart(name, {key: _padded(history[key], length) for key in keys}, epochs)
              for name, keys in list(groups.items())[:MAX_CHARTS]]
    return f'<div class="charts">{"".join(charts)}</div>' if charts else ""


def _padded(values: list[Any] | None, length: int) -> list[Any]:
    values = list(values or [])
    return values + [None] * (length - len(values))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _chart(name: str, series: dict[str, list[Any]], epochs: list[float]) -> str:
    values = [v for column in series.values() for v in column if _finite(v)]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - (abs(low) or 1) * 0.05, high + (abs(high) or 1) * 0.05
    first, last = min(epochs), max(epochs)
    span = (last - first) or 1

    def x(epoch: float) -> float:
        return LEFT + (epoch - first) / span * (WIDTH - LEFT - RIGHT) if last != first else (LEFT + WIDTH - RIGHT) / 2

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM)

    parts = [f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>']
    for value in (low, (low + high) / 2, high):
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for epoch in sorted({first, last}):
        parts.append(f'<text class="tick" x="{x(epoch):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                     f"{epoch:g}</text>")
    parts.append(f'<text class="tick" x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
                 "epoch</text>")
    legend = []
    for index, (key, column) in enumerate(series.items()):
        role = "validation" if key.startswith("val_") else "training"
        points = [(x(e), y(v)) for e, v in zip(epochs, column) if _finite(v)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline class="series {role}" points="{path}"><title>{escape(key)}</title></polyline>')
        parts.extend(f'<circle class="series {role}" cx="{px:.1f}" cy="{py:.1f}" r="2.5"/>' for px, py in points)
        legend.append(f'<li class="{role}" data-points="{len(points)}">{escape(key)}: last '
                      f"{_last(column)}</li>")
    label = escape(f"{name} per epoch: " + ", ".join(series))
    return (f'<figure class="chart" data-quantity="{escape(name)}"><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
            f'<figcaption>{escape(name)}<ul class="legend">{"".join(legend)}</ul></figcaption></figure>')


def _last(column: list[Any]) -> str:
    finite = [v for v in column if _finite(v)]
    return f"{finite[-1]:.4g}" if finite else "–"


__all__ = ["curve_charts", "render_markdown"]
