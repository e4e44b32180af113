"""Plotly figures for the Cost & Usage page, built from ``analytics.queries`` frames by pure functions.

Every bar carries, as its ``customdata``, the filters that select the ledger rows behind it
(``drill_of`` reads them back from a chart selection), so any bar can be drilled into.
Money is plotted as float, which is fine for a bar's height; the figures the page states in
words come from the exact ``Decimal`` values instead.
"""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from analytics.queries import StackBy

MONEY_AXIS = {"tickprefix": "$", "tickformat": ",.2f", "rangemode": "tozero"}
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "legend": {"orientation": "h", "y": -0.15},
          "hoverlabel": {"namelength": -1}}


def _drill(**fields: Any) -> str:
    return json.dumps({k: v for k, v in fields.items() if v is not None}, default=str, sort_keys=True)


def drill_of(point: dict) -> dict[str, Any]:
    """The filters a selected chart point stands for (see each builder), or {} for a point without any."""
    data = point.get("customdata")
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, str):
        return {}
    try:
        fields = json.loads(data)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def model_labels(frame: pl.DataFrame) -> list[str]:
    """Model names, with the provider where two providers serve a model of the same name."""
    pairs = list(zip(frame["provider"].to_list(), frame["model"].to_list()))
    providers_of: dict[str, set[str]] = {}
    for provider, model in pairs:
        providers_of.setdefault(model, set()).add(provider)
    return [f"{provider}/{model}" if len(providers_of[model]) > 1 else model for provider, model in pairs]


def _labels(frame: pl.DataFrame, by: StackBy) -> list[str]:
    return frame["provider"].to_list() if by == "provider" else model_labels(frame)


def _floats(series: pl.Series) -> list[float]:
    return [float(v) if v is not None else None for v in series.to_list()]


def spend_over_time(frame: pl.DataFrame, by: StackBy, grain: str) -> go.Figure:
    """Stacked bars of spend per local day (or hour), one colour per provider or model.

    A bar's drill: ``bucket`` (the local day or hour, ISO), ``provider`` and, by model, ``model``.
    """
    fig = go.Figure()
    if frame.is_empty():
        return fig
    labelled = frame.with_columns(pl.Series("label", _labels(frame, by)))
    totals = labelled.group_by("label").agg(pl.col("spend").sum()).sort(["spend", "label"], descending=[True, False])
    for label in totals["label"].to_list():  # the biggest spender at the bottom of each stack
        part = labelled.filter(pl.col("label") == label)
        buckets = part["bucket"].to_list()
        models = part["model"].to_list() if by == "model" else [None] * part.height
        fig.add_bar(
            name=label, x=buckets, y=_floats(part["spend"]),
            customdata=[[_drill(bucket=b.isoformat(), provider=p, model=m)]
                        for b, p, m in zip(buckets, part["provider"].to_list(), models)],
            hovertemplate=f"<b>{label}</b><br>%{{x}}<br>%{{y:$,.4f}}<extra></extra>",
        )
    tick = "%H:00" if grain == "hour" else "%d %b"
    fig.update_layout(barmode="stack", yaxis=MONEY_AXIS, xaxis={"tickformat": tick}, **LAYOUT)
    return fig


def comparison(frame: pl.DataFrame, by: StackBy) -> go.Figure:
    """Providers or models side by side: cost per 1k tokens, p50 latency (with p95) and error rate.

    A bar's drill: ``provider`` and, by model, ``model``.
    """
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Cost per 1k tokens", "Latency p50 (line to p95), ms", "Error rate"))
    if frame.is_empty():
        return fig
    labels = _labels(frame, by)
    models = frame["model"].to_list() if by == "model" else [None] * frame.height
    drills = [[_drill(provider=p, model=m)] for p, m in zip(frame["provider"].to_list(), models)]
    p50, p95 = _floats(frame["p50_ms"]), _floats(frame["p95_ms"])
    common = {"y": labels, "orientation": "h", "customdata": drills, "showlegend": False}
    fig.add_bar(x=_floats(frame["cost_per_1k_tokens"]), hovertemplate="%{y}: %{x:$,.5f} per 1k tokens<extra></extra>",
                row=1, col=1, **common)
    fig.add_bar(x=p50, error_x={"type": "data", "symmetric": False, "thickness": 1,
                                "array": [(b - a) if a is not None and b is not None else None for a, b in zip(p50, p95)],
                                "arrayminus": [0] * len(p50)},
                hovertemplate="%{y}: p50 %{x:,.0f} ms<extra></extra>", row=1, col=2, **common)
    fig.add_bar(x=_floats(frame["error_rate"]), hovertemplate="%{y}: %{x:.2%} of calls failed<extra></extra>",
                row=1, col=3, **common)
    fig.update_xaxes(tickprefix="$", row=1, col=1)
    fig.update_xaxes(tickformat=".1%", rangemode="tozero", row=1, col=3)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_layout(height=max(260, 28 * frame.height + 80), **LAYOUT)
    return fig


def top(frame: pl.DataFrame, dimension: str) -> go.Figure:
    """Horizontal bars of spend, biggest first. A bar's drill: ``{dimension: key}``."""
    fig = go.Figure()
    if frame.is_empty():
        return fig
    fig.add_bar(
        y=frame["label"].to_list(), x=_floats(frame["spend"]), orientation="h",
        customdata=[[_drill(**{dimension: k})] for k in frame["key"].to_list()],
        text=[f"{c:,} calls" for c in frame["calls"].to_list()], textposition="auto",
        hovertemplate="%{y}: %{x:$,.2f} over %{text}<extra></extra>",
    )
    fig.update_layout(xaxis=MONEY_AXIS, yaxis={"autorange": "reversed"}, height=max(220, 30 * frame.height + 60), **LAYOUT)
    return fig


def cache_savings(frame: pl.DataFrame) -> go.Figure:
    """Per model: what cache reads saved, and what cache writes cost above ordinary input.

    A bar's drill: ``provider``, ``model`` and ``cached`` (the calls that used a cache).
    """
    fig = go.Figure()
    if frame.is_empty():
        return fig
    labels = model_labels(frame)
    drills = [[_drill(provider=p, model=m, cached=True)]
              for p, m in zip(frame["provider"].to_list(), frame["model"].to_list())]
    fig.add_bar(name="Saved by cache reads", y=labels, x=_floats(frame["saved"]), orientation="h", customdata=drills,
                hovertemplate="%{y}: saved %{x:$,.4f}<extra></extra>")
    if any(v for v in frame["write_premium"].to_list()):
        premium = frame["write_premium"].to_list()
        fig.add_bar(name="Extra paid to write caches", y=labels, x=[-float(v) for v in premium], orientation="h",
                    customdata=drills, text=[f"${v:,.4f}" for v in premium], textposition="none",
                    hovertemplate="%{y}: writing caches cost %{text} more<extra></extra>")
    fig.update_layout(barmode="relative", xaxis={"tickprefix": "$", "tickformat": ",.2f"},
                      yaxis={"autorange": "reversed"}, height=max(220, 30 * frame.height + 80), **LAYOUT)
    return fig
