"""Charts for ``tokenmill plan ... --chart FILE``: ``.png`` through matplotlib (the
``charts`` extra), ``.html`` as a self-contained page with an inline SVG (no dependency)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import ConfigurationError, InvalidRequest

Point = tuple[float, float]
_WIDTH, _HEIGHT, _MARGIN = 720, 420, 64
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


@dataclass(frozen=True)
class Chart:
    """A line chart (series of points) or a bar chart (one value per label)."""

    title: str
    x_label: str
    y_label: str
    series: dict[str, list[Point]] | None = None
    bars: list[tuple[str, float]] | None = None


def write(chart: Chart, path: Path) -> None:
    """Write ``chart`` to ``path``; its suffix picks the format."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        _png(chart, path)
    elif suffix in (".html", ".htm"):
        _write_text(path, _html(chart))
    else:
        raise InvalidRequest("--chart takes a .png or .html file", param="chart")


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from exc


def _png(chart: Chart, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        message = "PNG charts need matplotlib: pip install 'tokenmill[charts]', or use .html"
        raise ConfigurationError(message) from exc
    figure, axes = pyplot.subplots(figsize=(9, 5.2))
    try:
        if chart.series is not None:
            for name, points in chart.series.items():
                axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
            axes.legend()
        if chart.bars is not None:
            labels = [label for label, _ in chart.bars]
            axes.bar(labels, [value for _, value in chart.bars], color=_COLOURS[0])
            axes.tick_params(axis="x", labelrotation=30)
            axes.axhline(0, color="black", linewidth=0.8)
        axes.set_title(chart.title)
        axes.set_xlabel(chart.x_label)
        axes.set_ylabel(chart.y_label)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        try:
            figure.savefig(path, dpi=110)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        pyplot.close(figure)


def _scale(low: float, high: float, start: float, end: float) -> tuple[float, float]:
    """(factor, offset) mapping [low, high] onto [start, end]."""
    span = (high - low) or 1.0
    factor = (end - start) / span
    return factor, start - low * factor


def _axes(chart: Chart, y_low: float, y_high: float) -> list[str]:
    left, right = _MARGIN, _WIDTH - 16
    top, bottom = 40, _HEIGHT - _MARGIN
    parts = [
        f'<text x="{_WIDTH / 2}" y="24" text-anchor="middle" font-size="16">'
        f"{html.escape(chart.title)}</text>",
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>',
        f'<text x="{(left + right) / 2}" y="{_HEIGHT - 16}" text-anchor="middle" '
        f'font-size="12">{html.escape(chart.x_label)}</text>',
        f'<text x="16" y="{(top + bottom) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 16 {(top + bottom) / 2})">{html.escape(chart.y_label)}</text>',
    ]
    factor, offset = _scale(y_low, y_high, bottom, top)
    for step in range(5):
        value = y_low + (y_high - y_low) * step / 4
        y = value * factor + offset
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
            f"{value:,.4g}</text>"
        )
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>')
    return parts


def _svg_lines(chart: Chart, series: dict[str, list[Point]]) -> list[str]:
    points = [point for line in series.values() for point in line]
    if not points:
        raise InvalidRequest("nothing to chart", param="chart")
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    y_low, y_high = min(0.0, min(ys)), max(0.0, max(ys))
    parts = _axes(chart, y_low, y_high)
    x_factor, x_offset = _scale(min(xs), max(xs), _MARGIN + 8, _WIDTH - 24)
    y_factor, y_offset = _scale(y_low, y_high, _HEIGHT - _MARGIN, 40)
    for index, (name, line) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        path = " ".join(
            f"{x * x_factor + x_offset:.1f},{y * y_factor + y_offset:.1f}" for x, y in line
        )
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{_MARGIN + 12}" y="{56 + 16 * index}" fill="{colour}" font-size="12">'
            f"{html.escape(name)}</text>"
        )
    for x in sorted(set(xs)):
        parts.append(
            f'<text x="{x * x_factor + x_offset:.1f}" y="{_HEIGHT - _MARGIN + 14}" '
            f'text-anchor="middle" font-size="10">{x:,.4g}</text>'
        )
    return parts


def _svg_bars(chart: Chart, bars: Sequence[tuple[str, float]]) -> list[str]:
    if not bars:
        raise InvalidRequest("nothing to chart", param="chart")
    values = [value for _, value in bars]
    y_low, y_high = min(0.0, min(values)), max(0.0, max(values))
    parts = _axes(chart, y_low, y_high)
    y_factor, y_offset = _scale(y_low, y_high, _HEIGHT - _MARGIN, 40)
    slot = (_WIDTH - 24 - _MARGIN) / len(bars)
    zero = y_offset
    for index, (label, value) in enumerate(bars):
        x = _MARGIN + 4 + slot * index
        y = value * y_factor + y_offset
        parts.append(
            f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{slot * 0.7:.1f}" '
            f'height="{abs(zero - y):.1f}" fill="{_COLOURS[0]}"><title>{html.escape(label)}: '
            f"{value:,.6g}</title></rect>"
        )
        parts.append(
            f'<text x="{x + slot * 0.35:.1f}" y="{_HEIGHT - _MARGIN + 14}" text-anchor="middle"'
            f' font-size="10">{html.escape(label)}</text>'
        )
    return parts


def _html(chart: Chart) -> str:
    if chart.series is not None:
        parts = _svg_lines(chart, chart.series)
    else:
        assert chart.bars is not None
        parts = _svg_bars(chart, chart.bars)
    svg = "\n".join(parts)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(chart.title)}</title></head><body>\n"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'font-family="sans-serif">\n{svg}\n</svg>\n</body></html>\n'
    )
