"""Turning a notebook's stored results into what people read: Parquet in and out, charts, the HTML export.

Everything here is a pure function of data (no database, no permissions), so the service in
``engine.notebooks`` decides who may see a result and this module only shapes it.

The HTML export is one self-contained file that opens offline: tables are plain HTML, and
when the notebook has a chart, plotly.js (about 4.8 MB) is inlined once in the page head
rather than fetched from a CDN. Static images would be smaller but need kaleido and a
headless Chrome, which this machine does not have; a notebook without charts stays a few
kilobytes because the script is left out.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt

from engine.errors import InvalidInput

if TYPE_CHECKING:
    from engine.notebooks import NotebookSnapshot

CHART_TYPES = ("bar", "line", "area", "scatter", "pie")
STORED_BYTES_CAP = 4 * 1024 * 1024  # one cell's Parquet; a notebook is read whole on every page view
EXPORT_ROWS = 1_000  # per table in the HTML export

_PLOTTERS = {"bar": px.bar, "line": px.line, "area": px.area, "scatter": px.scatter}


# --- results as Parquet -------------------------------------------------------------------


def encode_result(frame: pl.DataFrame, cap_bytes: int = STORED_BYTES_CAP) -> tuple[bytes, int]:
    """Parquet bytes of ``frame``, cut to fit ``cap_bytes``; returns the bytes and the rows kept."""
    rows = frame.height
    while True:
        buffer = io.BytesIO()
        frame.head(rows).write_parquet(buffer, compression="zstd")
        data = buffer.getvalue()
        if len(data) <= cap_bytes or rows == 0:
            return data, rows
        # Shrink in proportion to the overshoot, a little more to converge in a step or two.
        rows = int(rows * cap_bytes / len(data) * 0.9)


def decode_result(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


# --- charts -------------------------------------------------------------------------------


def chart_problem(options: dict[str, Any], frame: pl.DataFrame) -> str | None:
    """Why these chart options cannot be drawn from ``frame``, or None when they can."""
    kind = options.get("type")
    if kind not in CHART_TYPES:
        return f"Pick a chart type: {', '.join(CHART_TYPES)}."
    for role in ("x", "y"):
        if not options.get(role):
            return f"Pick a column for {'the labels' if kind == 'pie' and role == 'x' else role}."
    wanted = [options["x"], options["y"], *([options["color"]] if options.get("color") else [])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        return (
            f"The result has no column “{missing[0]}”. Its columns are: {', '.join(frame.columns) or 'none'}. "
            "Pick another column or change the query."
        )
    if not frame[options["y"]].dtype.is_numeric():
        return f"The y column “{options['y']}” must hold numbers to be drawn."
    return None


def build_figure(options: dict[str, Any], frame: pl.DataFrame) -> go.Figure:
    """A Plotly figure from a SQL cell's result; raises ``InvalidInput`` saying what to change."""
    problem = chart_problem(options, frame)
    if problem:
        raise InvalidInput(problem)
    # Exact decimals are for sums and storage; a chart only needs the value's position.
    data = frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))
    title = options.get("title") or None
    try:
        if options["type"] == "pie":
            fig = px.pie(data, names=options["x"], values=options["y"], title=title)
        else:
            fig = _PLOTTERS[options["type"]](
                data, x=options["x"], y=options["y"], color=options.get("color") or None, title=title
            )
    except (ValueError, TypeError) as exc:  # plotly's own word on data it cannot draw
        raise InvalidInput(f"This chart cannot be drawn from that result: {exc}") from None
    fig.update_layout(template="plotly_white", margin={"l": 40, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig


# --- Markdown and the HTML export ---------------------------------------------------------


@cache
def _markdown() -> MarkdownIt:
    # "js-default" escapes raw HTML and refuses javascript: links, so a note cannot inject script.
    return MarkdownIt("js-default").enable("table")


def render_markdown(text: str) -> str:
    return _markdown().render(text)


@cache
def _templates() -> Environment:
    return Environment(loader=PackageLoader("engine", "templates"), autoescape=select_autoescape(["html", "j2"]))


def cell_text(value: Any) -> str:
    """One table value as text: exact decimals stay exact, times read as times, nulls stay empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_html(snapshot: NotebookSnapshot) -> str:
    """The whole notebook as one standalone HTML page (see the module docstring for charts)."""
    cells = []
    for cell in snapshot.cells:
        entry: dict[str, Any] = {"cell": cell}
        if cell.kind == "markdown":
            entry["html"] = render_markdown(cell.source)
        elif cell.kind == "prompt" and cell.frame is not None:
            answer = cell.frame.row(0, named=True)
            entry["html"] = render_markdown(answer["answer"])
            cost = "unpriced" if answer["cost_usd"] is None else f"${cell_text(answer['cost_usd'])}"
            entry["meta"] = (f"{answer['model']} · {cost} · {answer['input_tokens']:,} tokens in, "
                             f"{answer['output_tokens']:,} out")
        elif cell.frame is not None:
            shown = cell.frame.head(EXPORT_ROWS)
            entry["columns"] = shown.columns
            entry["rows"] = [[cell_text(v) for v in row] for row in shown.iter_rows()]
            entry["hidden_rows"] = cell.frame.height - shown.height
        if cell.figure is not None:
            entry["chart"] = pio.to_html(
                go.Figure(cell.figure), full_html=False, include_plotlyjs=False,
                div_id=f"chart-{cell.number}", config={"displaylogo": False, "responsive": True},
            )
        cells.append(entry)
    needs_plotly = any("chart" in c for c in cells)
    return _templates().get_template("notebook.html.j2").render(
        snapshot=snapshot,
        cells=cells,
        plotly_js=_plotly_js() if needs_plotly else None,
    )


@cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs  # 4.8 MB string: read only when an export has a chart

    return get_plotlyjs()
