"""Charts as PNG images for email and PDF, drawn with matplotlib from the same data the pages chart.

Email clients run no JavaScript, so the page's Plotly figures cannot travel; Plotly's own static
export needs kaleido and a Chrome, which a fresh machine lacks. matplotlib draws from data alone.
Each function takes a frame and returns PNG bytes; ``matplotlib.figure.Figure`` is used directly
(never ``pyplot``), so nothing global is touched and worker threads may draw at once.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Any

import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

WIDTH_IN, HEIGHT_IN, DPI = 7.2, 3.4, 110  # about 800×370 px: the width of an email's body
PALETTE = ["#4C6EF5", "#F76707", "#2B8A3E", "#C2255C", "#5F3DC4", "#1098AD", "#E67700", "#495057"]
MAX_SERIES = 8  # more colours than that read as noise: the rest are summed as "Other"


def _new(height: float = HEIGHT_IN) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e9ecef", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _floats(series: pl.Series) -> list[float]:
    return [float(v) if v is not None else 0.0 for v in series.to_list()]


def _labels(values: list[Any]) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, datetime):
            out.append(v.strftime("%d %b %H:%M") if (v.hour or v.minute) else v.strftime("%d %b"))
        elif isinstance(v, date):
            out.append(v.strftime("%d %b"))
        else:
            out.append("" if v is None else str(v))
    return out


def _money_axis(ax, axis: str = "y") -> None:
    fmt = FuncFormatter(lambda v, _: f"${v:,.2f}" if abs(v) < 100 else f"${v:,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _thin_ticks(ax, count: int) -> None:
    if count > 12:
        step = -(-count // 12)
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % step == 0)


# --- a notebook's chart cell --------------------------------------------------------------


def cell_chart(options: dict[str, Any], frame: pl.DataFrame) -> bytes:
    """A chart cell (bar, line, area, scatter or pie; optional colour column) as ``build_figure`` draws it."""
    kind, x, y, color = options["type"], options["x"], options["y"], options.get("color") or None
    title = options.get("title") or None
    data = frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))
    fig, ax = _new()
    if kind == "pie":
        parts = data.group_by(x, maintain_order=True).agg(pl.col(y).sum()).sort(y, descending=True)
        labels, values = _labels(parts[x].to_list()), _floats(parts[y])
        if len(values) > MAX_SERIES:
            labels, values = labels[:MAX_SERIES - 1] + ["Other"], values[:MAX_SERIES - 1] + [sum(values[MAX_SERIES - 1:])]
        ax.pie([max(v, 0) for v in values], labels=labels, colors=PALETTE[:len(values)], autopct="%1.0f%%",
               startangle=90, counterclock=False, textprops={"fontsize": 8})
        ax.axis("equal")
        ax.grid(False)
    else:
        groups = [(None, data)] if color is None else [
            (key[0] if isinstance(key, tuple) else key, part)
            for key, part in data.group_by(color, maintain_order=True)][:MAX_SERIES]
        categorical = not (data[x].dtype.is_numeric() or data[x].dtype.is_temporal())
        categories = list(dict.fromkeys(data[x].to_list())) if categorical else []
        bottoms = [0.0] * len(categories)
        width = 0.8 / max(1, len(groups)) if kind == "bar" and categorical else 0.8
        for i, (name, part) in enumerate(groups):
            colour = PALETTE[i % len(PALETTE)]
            label = None if name is None else str(name)
            xs = part[x].to_list()
            ys = _floats(part[y])
            if categorical:
                positions = [categories.index(v) for v in xs]
                if kind == "bar":
                    positions = [p - 0.4 + width * (i + 0.5) for p in positions]
            else:
                positions = xs
            if kind == "bar":
                ax.bar(positions, ys, width=width if categorical else 0.8, color=colour, label=label)
            elif kind == "line":
                ax.plot(positions, ys, color=colour, label=label, linewidth=1.8, marker="o", markersize=3)
            elif kind == "area":
                if categorical:
                    stacked = [0.0] * len(categories)
                    for p, v in zip(positions, ys):
                        stacked[p] = v
                    tops = [b + v for b, v in zip(bottoms, stacked)]
                    ax.fill_between(range(len(categories)), bottoms, tops, color=colour, alpha=0.75, label=label)
                    bottoms = tops
                else:
                    ax.fill_between(positions, ys, color=colour, alpha=0.45, label=label)
                    ax.plot(positions, ys, color=colour, linewidth=1.2)
            else:
                ax.scatter(positions, ys, color=colour, label=label, s=14)
        if categorical:
            ax.set_xticks(range(len(categories)), _labels(categories), rotation=30 if len(categories) > 6 else 0,
                          ha="right" if len(categories) > 6 else "center", fontsize=8)
            _thin_ticks(ax, len(categories))
        ax.set_xlabel(x, fontsize=9)
        ax.set_ylabel(y, fontsize=9)
        if color is not None:
            ax.legend(fontsize=8, frameon=False, title=color, title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    return _png(fig)


# --- Cost & Usage -------------------------------------------------------------------------


def spend_over_time(frame: pl.DataFrame, grain: str) -> bytes:
    """Stacked bars of spend per local day (or hour) by provider: ``dashboards`` Summary.over_time."""
    fig, ax = _new()
    buckets = sorted(set(frame["bucket"].to_list()))
    by_provider = (frame.group_by("provider").agg(pl.col("spend").sum())
                   .sort(["spend", "provider"], descending=[True, False])["provider"].to_list())
    shown = by_provider[:MAX_SERIES - 1] if len(by_provider) > MAX_SERIES else by_provider
    bottoms = [0.0] * len(buckets)
    index = {b: i for i, b in enumerate(buckets)}
    for i, provider in enumerate([*shown, *(["Other"] if len(shown) < len(by_provider) else [])]):
        part = frame.filter(pl.col("provider") == provider if provider != "Other" else ~pl.col("provider").is_in(shown))
        heights = [0.0] * len(buckets)
        for b, v in zip(part["bucket"].to_list(), _floats(part["spend"])):
            heights[index[b]] += v
        ax.bar(range(len(buckets)), heights, bottom=bottoms, color=PALETTE[i % len(PALETTE)], label=provider, width=0.8)
        bottoms = [a + b for a, b in zip(bottoms, heights)]
    labels = [b.strftime("%H:00") if grain == "hour" else b.strftime("%d %b") for b in buckets]
    ax.set_xticks(range(len(buckets)), labels, fontsize=8, rotation=0 if len(buckets) <= 10 else 45,
                  ha="center" if len(buckets) <= 10 else "right")
    _thin_ticks(ax, len(buckets))
    _money_axis(ax)
    ax.set_title("Spend over time", fontsize=11, loc="left")
    if by_provider:
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def top_bars(frame: pl.DataFrame, title: str) -> bytes:
    """Horizontal bars of spend, biggest at the top: a ``queries.top`` frame (label, spend, calls)."""
    height = max(2.2, 0.32 * frame.height + 1.0)
    fig, ax = _new(height)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e9ecef", linewidth=0.8)
    labels = [str(v) if len(str(v)) <= 32 else str(v)[:31] + "…" for v in frame["label"].to_list()]
    ax.barh(range(frame.height), _floats(frame["spend"]), color=PALETTE[0], height=0.65)
    ax.set_yticks(range(frame.height), labels, fontsize=8)
    ax.invert_yaxis()
    _money_axis(ax, "x")
    ax.set_title(title, fontsize=11, loc="left")
    return _png(fig)
