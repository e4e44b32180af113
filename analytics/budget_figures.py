"""Plotly figures for the Budgets & Alerts page, built from plain values by pure functions.

Money is plotted as float, which is fine for a bar's length or a line's height; the figures
the page states in words come from the exact ``Decimal`` values instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import plotly.graph_objects as go

SPENT, HELD, LEFT, FORECAST, LIMIT = "#0f766e", "#d97706", "#cbd5e1", "#6366f1", "#b91c1c"
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "legend": {"orientation": "h", "y": -0.2},
          "hoverlabel": {"namelength": -1}}


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}" if abs(value) >= Decimal("0.01") or not value else f"${value:,.4f}"


def usage_bars(budgets: Sequence[tuple[str, Decimal, Decimal, Decimal]]) -> go.Figure:
    """One bar per budget (name, limit, spent, held): spent, held and what remains, as shares of its limit."""
    names = [name for name, *_ in budgets]
    fig = go.Figure()
    for label, color, pick in (("Spent", SPENT, lambda lim, sp, hd: sp),
                               ("Held for calls in progress", HELD, lambda lim, sp, hd: hd),
                               ("Remaining", LEFT, lambda lim, sp, hd: max(lim - sp - hd, Decimal(0)))):
        amounts = [pick(limit, spent, held) for _, limit, spent, held in budgets]
        fig.add_bar(y=names, x=[float(a / limit * 100) for a, (_, limit, *_) in zip(amounts, budgets)],
                    name=label, orientation="h", marker_color=color, text=[_usd(a) for a in amounts],
                    textposition="inside", insidetextanchor="middle",
                    hovertemplate="%{y}: %{text} (%{x:.0f}% of the limit)<extra>" + label + "</extra>")
    fig.update_layout(barmode="stack", height=110 + 40 * len(budgets),
                      xaxis={"ticksuffix": "%", "rangemode": "tozero"}, yaxis={"autorange": "reversed"},
                      **(LAYOUT | {"legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "traceorder": "normal"}}))
    return fig


def burndown(limit: Decimal, actual: Sequence[tuple[datetime, Decimal]],
             forecast: Sequence[tuple[datetime, Decimal, Decimal, Decimal]] = (),
             exhausted_at: datetime | None = None, tz: str = "UTC") -> go.Figure:
    """What remains of a budget over its period: so far (solid), forecast (dashed) with its 80 % band."""
    zone = ZoneInfo(tz)

    def local(values: Sequence[datetime]) -> list[datetime]:
        return [v.astimezone(zone).replace(tzinfo=None) for v in values]

    fig = go.Figure()
    if forecast:
        at = local([p[0] for p in forecast])
        fig.add_scatter(x=at, y=[float(limit - high) for _, _, _, high in forecast], mode="lines",
                        line={"width": 0}, showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=at, y=[float(limit - low) for _, _, low, _ in forecast], mode="lines", line={"width": 0},
                        fill="tonexty", fillcolor="rgba(99, 102, 241, 0.18)", name="Forecast range (80%)",
                        hoverinfo="skip")
        fig.add_scatter(x=at, y=[float(limit - expected) for _, expected, _, _ in forecast], mode="lines",
                        line={"color": FORECAST, "dash": "dash"}, name="Forecast",
                        hovertemplate="%{x|%a %d %b %H:%M}: $%{y:,.2f} left<extra>Forecast</extra>")
    fig.add_scatter(x=local([a for a, _ in actual]), y=[float(limit - spent) for _, spent in actual], mode="lines",
                    line={"color": SPENT, "width": 3}, name="Remaining so far",
                    hovertemplate="%{x|%a %d %b %H:%M}: $%{y:,.2f} left<extra></extra>")
    fig.add_hline(y=0, line={"color": LIMIT, "dash": "dot"}, annotation_text="Limit reached",
                  annotation_position="bottom right")
    if exhausted_at is not None:
        when = exhausted_at.astimezone(zone).replace(tzinfo=None)
        fig.add_vline(x=when, line={"color": LIMIT, "dash": "dot"})
        fig.add_annotation(x=when, y=float(limit), text=f"Runs out ~{when:%a %d %b %H:%M}", showarrow=False,
                           yanchor="top", xanchor="right", font={"color": LIMIT})
    fig.update_layout(height=340, yaxis={"title": "Left of the limit", "tickprefix": "$", "tickformat": ",.2f"},
                      xaxis={"title": None}, **LAYOUT)
    return fig
