"""Notebooks: ordered Markdown, SQL and Chart cells over the warehouse, saved per workspace with their last results.

Who sees what. A notebook belongs to the member who made it and stays private to them until
shared with the workspace. A shared notebook is read by every member and edited and run by
editors and up; only its owner or an admin may unshare or delete it. Someone else's private
notebook is reported as not found, so not even its title leaks.

Running (``engine.notebook_runs``). A SQL cell runs through ``analytics.sandbox`` (a locked-down DuckDB over the
workspace's own warehouse views, in a worker process) outside any database transaction: a
query may take seconds, and SQLite has a single writer. Its rows are then stored as Parquet
(at most ``ROW_CAP`` rows and ``notebook_render.STORED_BYTES_CAP`` bytes) with the row count,
timing, error and time of the run. Changing a SQL cell's query clears its result, so a
stored result always belongs to the query shown above it. A Chart cell stores only its
options (type, x, y, colour, source cell); its figure is drawn afresh from the source cell's
stored result. A Prompt cell's text is a Jinja2 template (sandboxed) in which earlier results
appear as ``{{ cell_2 }}`` (a SQL cell's rows as CSV, a Prompt cell's answer); it runs through
``engine.generation.generate`` like any other call, so it is priced, checked against budgets
and written to the ledger with the notebook's id. Its answer is stored as a one-row result.
Markdown cells never run.

Reports take a notebook through ``notebook_snapshot`` (its last results, as data) and
``export_html`` (the same snapshot as one standalone page).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.accounts import check_name
from engine.config import PROJECT_ROOT
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import Notebook, NotebookCell, User
from engine.notebook_render import CHART_TYPES, build_figure, chart_problem, decode_result, render_html
from engine.permissions import Actor, authorize, can

KINDS = ("markdown", "sql", "chart", "prompt")
KIND_LABELS = {"markdown": "Markdown", "sql": "SQL", "chart": "Chart", "prompt": "Prompt"}
ROW_CAP = 5_000  # rows kept per SQL cell: enough to read and chart, small enough to store
PROMPT_ROWS = 200  # rows of an earlier result put into a prompt: a model reads every one, at a price
MAX_PROMPT_TOKENS = 100_000
MAX_CELLS = 100
MAX_SOURCE_CHARS = 50_000
STARTERS_DIR = PROJECT_ROOT / "data" / "notebooks"
NOT_FOUND = "That notebook does not exist, or its owner has not shared it with you."


# --- what callers get back ----------------------------------------------------------------


@dataclass(frozen=True)
class CellView:
    id: int
    number: int  # 1-based, as people count cells
    kind: str
    source: str
    options: dict[str, Any]
    frame: pl.DataFrame | None  # a SQL cell's stored rows
    row_count: int | None
    truncated: bool  # the query matched more rows than were kept
    elapsed_ms: int | None
    error: str | None  # a SQL cell's stored error, or why a chart cannot be drawn now
    ran_at: datetime | None

    @property
    def label(self) -> str:
        return f"Cell {self.number} · {KIND_LABELS[self.kind]}"

    @property
    def answer(self) -> str | None:
        """A Prompt cell's stored answer."""
        return self.frame["answer"][0] if self.kind == "prompt" and self.frame is not None else None


@dataclass(frozen=True)
class NotebookSummary:
    id: int
    title: str
    owner_id: int | None
    owner_name: str | None
    shared: bool
    cell_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NotebookView:
    id: int
    title: str
    owner_id: int | None
    owner_name: str | None
    shared: bool
    created_at: datetime
    updated_at: datetime
    cells: tuple[CellView, ...]
    can_edit: bool  # add, change, move, delete and run cells; rename
    can_manage: bool  # share, unshare, delete the notebook

    def cell(self, cell_id: int) -> CellView:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise NotFound("That cell no longer exists. It may have been deleted by someone else.")

    def chart_sources(self, cell: CellView) -> list[CellView]:
        """The SQL cells above ``cell``: what a chart there may draw from."""
        return [c for c in self.cells if c.kind == "sql" and c.number < cell.number]


@dataclass(frozen=True)
class CellSnapshot:
    number: int
    kind: str
    source: str
    options: dict[str, Any]
    frame: pl.DataFrame | None
    row_count: int | None
    truncated: bool
    elapsed_ms: int | None
    error: str | None
    ran_at: datetime | None
    figure: dict[str, Any] | None  # a chart's Plotly figure as plain JSON data
    source_number: int | None = None  # a chart's source cell, so reports can draw it from that cell's rows


@dataclass(frozen=True)
class NotebookSnapshot:
    notebook_id: int
    workspace_id: int
    title: str
    taken_at: datetime
    cells: tuple[CellSnapshot, ...]


# --- access -------------------------------------------------------------------------------


def _visible(nb: Notebook | None, actor: Actor) -> bool:
    return nb is not None and nb.workspace_id == actor.workspace_id and (nb.shared or nb.owner_id == actor.user_id)


def _notebook(s: Session, actor: Actor, notebook_id: int, action: str, *, lock: bool = False) -> tuple[Notebook, str]:
    role = authorize(s, actor, action)
    # Row lock on PostgreSQL so concurrent cell edits renumber one at a time; SQLite's writer lock does the same.
    nb = s.get(Notebook, notebook_id, with_for_update=lock or None)
    if not _visible(nb, actor):
        raise NotFound(NOT_FOUND)
    return nb, role


def _cell(
    s: Session, actor: Actor, cell_id: int, action: str, *, lock: bool = False
) -> tuple[NotebookCell, Notebook, str]:
    cell = s.get(NotebookCell, cell_id)
    if cell is None:
        authorize(s, actor, action)
        raise NotFound("That cell no longer exists. It may have been deleted by someone else.")
    nb, role = _notebook(s, actor, cell.notebook_id, action, lock=lock)
    return cell, nb, role


def _may_manage(nb: Notebook, actor: Actor, role: str) -> bool:
    return nb.owner_id == actor.user_id or (nb.shared and can(role, "notebook.manage"))


def _check_manage(nb: Notebook, actor: Actor, role: str) -> None:
    if not _may_manage(nb, actor, role):
        raise PermissionDenied("Only the notebook's owner or an admin can share, unshare or delete it.")


# --- reading ------------------------------------------------------------------------------


def list_notebooks(actor: Actor, search: str = "") -> list[NotebookSummary]:
    """The notebooks this member can see (their own and shared ones), most recently changed first."""
    with db.read_session() as s:
        authorize(s, actor, "notebook.read")
        counts = (
            select(NotebookCell.notebook_id, func.count().label("n")).group_by(NotebookCell.notebook_id).subquery()
        )
        q = (
            select(Notebook, User.name, func.coalesce(counts.c.n, 0))
            .outerjoin(User, User.id == Notebook.owner_id)
            .outerjoin(counts, counts.c.notebook_id == Notebook.id)
            .where(
                Notebook.workspace_id == actor.workspace_id,
                Notebook.shared | (Notebook.owner_id == actor.user_id),
            )
            .order_by(Notebook.updated_at.desc(), Notebook.id.desc())
        )
        if search.strip():
            q = q.where(func.lower(Notebook.title).contains(search.strip().lower(), autoescape=True))
        return [
            NotebookSummary(nb.id, nb.title, nb.owner_id, owner, nb.shared, n, nb.created_at, nb.updated_at)
            for nb, owner, n in s.execute(q).all()
        ]


def get_notebook(actor: Actor, notebook_id: int) -> NotebookView:
    with db.read_session() as s:
        nb, role = _notebook(s, actor, notebook_id, "notebook.read")
        return _view(s, nb, actor, role)


def _ordered_cells(s: Session, notebook_id: int) -> list[NotebookCell]:
    return list(
        s.scalars(
            select(NotebookCell)
            .where(NotebookCell.notebook_id == notebook_id)
            .order_by(NotebookCell.position, NotebookCell.id)
        )
    )


def _view(s: Session, nb: Notebook, actor: Actor, role: str) -> NotebookView:
    owner = s.get(User, nb.owner_id) if nb.owner_id else None
    cells = [_cell_view(c, i + 1) for i, c in enumerate(_ordered_cells(s, nb.id))]
    by_id = {c.id: c for c in cells}
    cells = [replace(c, error=_chart_error(c, by_id)) if c.kind == "chart" else c for c in cells]
    return NotebookView(
        nb.id, nb.title, nb.owner_id, owner.name if owner else None, nb.shared, nb.created_at, nb.updated_at,
        tuple(cells), can_edit=can(role, "notebook.write"),
        can_manage=can(role, "notebook.write") and _may_manage(nb, actor, role),
    )


def _cell_view(cell: NotebookCell, number: int) -> CellView:
    return CellView(
        cell.id, number, cell.kind, cell.source, dict(cell.options or {}),
        decode_result(cell.result) if cell.result is not None else None,
        cell.result_rows, cell.result_truncated, cell.result_ms, cell.error, cell.ran_at,
    )


def _chart_source(cell: CellView, by_id: dict[int, CellView]) -> tuple[CellView | None, str | None]:
    source_id = cell.options.get("source")
    if source_id is None:
        return None, "Pick the SQL cell this chart draws from."
    source = by_id.get(source_id)
    if source is None or source.kind != "sql":
        return None, "The cell this chart drew from was deleted. Pick another SQL cell."
    if source.number > cell.number:
        return None, (
            f"This chart draws from cell {source.number}, which is below it. "
            "Move the chart further down or pick a cell above it."
        )
    if source.frame is None:
        if source.error:
            return None, f"Cell {source.number} failed, so there is nothing to draw. Fix its query and run it."
        return None, f"Run cell {source.number} first: this chart draws its result."
    return source, None


def _chart_error(cell: CellView, by_id: dict[int, CellView]) -> str | None:
    source, problem = _chart_source(cell, by_id)
    return problem or chart_problem(cell.options, source.frame)


def chart_figure(view: NotebookView, cell: CellView) -> go.Figure:
    """The figure of a chart cell, drawn from its source's stored result; ``InvalidInput`` says why not."""
    source, problem = _chart_source(cell, {c.id: c for c in view.cells})
    if problem:
        raise InvalidInput(problem)
    return build_figure(cell.options, source.frame)


# --- notebooks ----------------------------------------------------------------------------


def create_notebook(actor: Actor, title: str, *, shared: bool = False) -> NotebookView:
    title = check_name(title, "Notebook title")
    with db.transaction() as s:
        authorize(s, actor, "notebook.write")
        nb = _new_notebook(s, actor, title, shared)
        audit.record_for(s, actor, "notebook.created", "notebook", nb.id, title=title)
        nb_id = nb.id
    return get_notebook(actor, nb_id)


def _new_notebook(s: Session, actor: Actor, title: str, shared: bool) -> Notebook:
    nb = Notebook(workspace_id=actor.workspace_id, owner_id=actor.user_id, title=title, shared=bool(shared))
    s.add(nb)
    s.flush()
    return nb


def rename_notebook(actor: Actor, notebook_id: int, title: str) -> None:
    title = check_name(title, "Notebook title")
    with db.transaction() as s:
        nb, _ = _notebook(s, actor, notebook_id, "notebook.write")
        old, nb.title, nb.updated_at = nb.title, title, utcnow()
        audit.record_for(s, actor, "notebook.renamed", "notebook", nb.id, old=old, title=title)


def set_shared(actor: Actor, notebook_id: int, shared: bool) -> None:
    """Share with every member of the workspace, or make private to the owner again."""
    with db.transaction() as s:
        nb, role = _notebook(s, actor, notebook_id, "notebook.write")
        _check_manage(nb, actor, role)
        nb.shared = bool(shared)
        audit.record_for(s, actor, "notebook.shared" if shared else "notebook.unshared", "notebook", nb.id)


def duplicate_notebook(actor: Actor, notebook_id: int, title: str | None = None) -> NotebookView:
    """A private copy, owned by the actor, with every cell and its last result."""
    with db.transaction() as s:
        original, _ = _notebook(s, actor, notebook_id, "notebook.write")
        title = check_name(title if title is not None else f"Copy of {original.title}"[:200], "Notebook title")
        copy = _new_notebook(s, actor, title, shared=False)
        cells = _ordered_cells(s, original.id)
        if len(cells) > MAX_CELLS:
            raise InvalidInput(f"A notebook holds at most {MAX_CELLS} cells.")
        _insert_cells(s, copy.id, [(c.id, _copy_fields(c)) for c in cells])
        audit.record_for(s, actor, "notebook.duplicated", "notebook", copy.id, source=original.id, title=title)
        copy_id = copy.id
    return get_notebook(actor, copy_id)


def _copy_fields(cell: NotebookCell) -> dict[str, Any]:
    return {
        "kind": cell.kind, "source": cell.source, "options": dict(cell.options or {}), "result": cell.result,
        "result_rows": cell.result_rows, "result_truncated": cell.result_truncated,
        "result_ms": cell.result_ms, "error": cell.error, "ran_at": cell.ran_at,
    }


def _insert_cells(s: Session, notebook_id: int, cells: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    """Append cells in order; a chart's ``options["source"]`` names another cell by its key here."""
    ids: dict[Any, int] = {}
    made = []
    for position, (key, fields) in enumerate(cells):
        cell = NotebookCell(notebook_id=notebook_id, position=position, **fields)
        s.add(cell)
        s.flush()
        ids[key] = cell.id
        made.append(cell)
    for cell in made:
        if cell.kind == "chart" and cell.options.get("source") is not None:
            cell.options = {**cell.options, "source": ids.get(cell.options["source"])}


def delete_notebook(actor: Actor, notebook_id: int) -> None:
    with db.transaction() as s:
        nb, role = _notebook(s, actor, notebook_id, "notebook.write")
        _check_manage(nb, actor, role)
        audit.record_for(s, actor, "notebook.deleted", "notebook", nb.id, title=nb.title)
        s.delete(nb)


# --- cells --------------------------------------------------------------------------------


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"A cell is one of: {', '.join(KIND_LABELS.values())}.")
    return kind


def _check_source(source: str | None) -> str:
    source = source or ""
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidInput(f"A cell holds at most {MAX_SOURCE_CHARS:,} characters; this one has {len(source):,}.")
    return source


def _chart_options(options: dict[str, Any], above: Iterable[NotebookCell]) -> dict[str, Any]:
    """Checked chart options; the source must be a SQL cell above the chart."""
    kind = options.get("type") or "bar"
    if kind not in CHART_TYPES:
        raise InvalidInput(f"A chart is one of: {', '.join(CHART_TYPES)}.")
    clean: dict[str, Any] = {"type": kind}
    source = options.get("source")
    if source is not None:
        if not any(c.id == source and c.kind == "sql" for c in above):
            raise InvalidInput("A chart draws from a SQL cell above it. Pick one of those.")
        clean["source"] = source
    for key in ("x", "y", "color", "title"):
        value = options.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 200:
            raise InvalidInput(f"The chart's {key} must be a column name of at most 200 characters.")
        clean[key] = value
    return clean


def _prompt_options(options: dict[str, Any]) -> dict[str, Any]:
    """Checked prompt options: an optional "connection/model" target and output token limit."""
    clean: dict[str, Any] = {}
    target = options.get("target") or ""
    if target:
        connection, _, model = target.strip().partition("/") if isinstance(target, str) else ("", "", "")
        if not connection or not model or len(target) > 300:
            raise InvalidInput("Choose the model as connection/model (like openai/gpt-4o-mini), or leave it empty "
                               "for the workspace's default route.")
        clean["target"] = target.strip()
    max_tokens = options.get("max_tokens")
    if max_tokens not in (None, ""):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 < max_tokens <= MAX_PROMPT_TOKENS:
            raise InvalidInput(f"The answer's length limit is a whole number of tokens from 1 to {MAX_PROMPT_TOKENS:,}.")
        clean["max_tokens"] = max_tokens
    return clean


def add_cell(
    actor: Actor, notebook_id: int, kind: str, source: str = "", options: dict[str, Any] | None = None
) -> CellView:
    """Append a cell at the end of the notebook."""
    kind, source = _check_kind(kind), _check_source(source)
    with db.transaction() as s:
        nb, role = _notebook(s, actor, notebook_id, "notebook.write", lock=True)
        cells = _ordered_cells(s, nb.id)
        if len(cells) >= MAX_CELLS:
            raise InvalidInput(f"A notebook holds at most {MAX_CELLS} cells. Start another notebook for more.")
        clean = (_chart_options(options or {}, cells) if kind == "chart"
                 else _prompt_options(options or {}) if kind == "prompt" else {})
        s.add(NotebookCell(notebook_id=nb.id, position=len(cells), kind=kind, source=source, options=clean))
        nb.updated_at = utcnow()
        s.flush()
        return _view(s, nb, actor, role).cells[-1]


def update_cell(actor: Actor, cell_id: int, *, source: str | None = None, options: dict[str, Any] | None = None) -> CellView:
    """Change a cell's text (Markdown, SQL, Prompt) or options (Chart, Prompt).

    A changed query or prompt drops its old result, which no longer answers it.
    """
    if source is not None:
        source = _check_source(source)
    with db.transaction() as s:
        cell, nb, role = _cell(s, actor, cell_id, "notebook.write", lock=True)
        if cell.kind == "chart":
            if options is not None:
                cells = _ordered_cells(s, nb.id)
                cell.options = _chart_options(options, cells[: cells.index(cell)])
        else:
            changed = False
            if cell.kind == "prompt" and options is not None:
                clean = _prompt_options(options)
                changed, cell.options = clean != cell.options, clean
            if source is not None and source != cell.source:
                changed, cell.source = True, source
            if changed and cell.kind in ("sql", "prompt"):
                _clear_result(cell)
        nb.updated_at = utcnow()
        s.flush()
        return _view(s, nb, actor, role).cell(cell.id)


def _clear_result(cell: NotebookCell) -> None:
    cell.result = cell.result_rows = cell.result_ms = cell.error = cell.ran_at = None
    cell.result_truncated = False


def move_cell(actor: Actor, cell_id: int, offset: int) -> None:
    """Move a cell up (-1) or down (+1) by one place."""
    if offset not in (-1, 1):
        raise InvalidInput("A cell moves one place up or down at a time.")
    with db.transaction() as s:
        cell, nb, _ = _cell(s, actor, cell_id, "notebook.write", lock=True)
        cells = _ordered_cells(s, nb.id)
        at = cells.index(cell)
        if not 0 <= at + offset < len(cells):
            raise InvalidInput(f"Cell {at + 1} is already at the {'top' if offset < 0 else 'bottom'}.")
        cells[at], cells[at + offset] = cells[at + offset], cells[at]
        for position, c in enumerate(cells):
            c.position = position
        nb.updated_at = utcnow()


def delete_cell(actor: Actor, cell_id: int) -> None:
    with db.transaction() as s:
        cell, nb, _ = _cell(s, actor, cell_id, "notebook.write", lock=True)
        s.delete(cell)
        s.flush()
        for position, c in enumerate(_ordered_cells(s, nb.id)):
            c.position = position
        nb.updated_at = utcnow()


# --- hand-off to reports and the HTML export ----------------------------------------------


def notebook_snapshot(actor: Actor, notebook_id: int) -> NotebookSnapshot:
    """The notebook's last results as data, for reports to render, attach or schedule.

    Reads what is stored, it runs nothing: call ``notebook_runs.run_all(actor, notebook_id)`` first for
    fresh numbers. Each cell carries its source and options; SQL cells their rows as a Polars
    frame (``frame``, at most ``ROW_CAP`` rows; ``truncated`` when the query matched more),
    row count, timing, error and time of the run; Chart cells their Plotly figure as plain
    JSON data (``figure``, ready for ``plotly.graph_objects.Figure(...)``), or ``error`` saying
    why it cannot be drawn. The actor must be able to read the notebook.
    """
    view = get_notebook(actor, notebook_id)
    numbers = {c.id: c.number for c in view.cells}
    cells = []
    for cell in view.cells:
        figure = None
        if cell.kind == "chart" and cell.error is None:
            figure = json.loads(chart_figure(view, cell).to_json())
        cells.append(
            CellSnapshot(
                cell.number, cell.kind, cell.source, cell.options, cell.frame, cell.row_count, cell.truncated,
                cell.elapsed_ms, cell.error, cell.ran_at, figure,
                numbers.get(cell.options.get("source")) if cell.kind == "chart" else None,
            )
        )
    return NotebookSnapshot(view.id, actor.workspace_id, view.title, utcnow(), tuple(cells))


def export_html(actor: Actor, notebook_id: int) -> str:
    """The notebook with its last results as one standalone HTML page that opens offline."""
    return render_html(notebook_snapshot(actor, notebook_id))


# --- starter notebooks --------------------------------------------------------------------


@dataclass(frozen=True)
class Starter:
    title: str
    summary: str
    cells: tuple[tuple[str, dict[str, Any]], ...]  # (key, NotebookCell fields) for _insert_cells


def starter_notebooks(directory: Path = STARTERS_DIR) -> list[Starter]:
    """The notebooks shipped in ``data/notebooks/*.yaml``, checked as they are read."""
    return [_parse_starter(path) for path in sorted(directory.glob("*.yaml"))]


def _parse_starter(path: Path) -> Starter:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    cells = []
    for index, item in enumerate(spec["cells"]):
        (kind,) = [k for k in item if k in KINDS]
        body = item[kind]
        if kind == "chart":
            fields = {"kind": kind, "source": "", "options": {**body}}
        else:
            fields = {"kind": kind, "source": _check_source(body.strip() + "\n"), "options": {}}
        cells.append((item.get("ref", f"#{index}"), fields))
    refs = {key for key, fields in cells if fields["kind"] == "sql"}
    for key, fields in cells:
        if fields["kind"] == "chart" and fields["options"].get("source") not in refs:
            raise ValueError(f"{path.name}: chart {key} draws from an unknown SQL cell")
    return Starter(check_name(spec["title"], "Notebook title"), spec.get("summary", ""), tuple(cells))


def install_starters(actor: Actor, *, shared: bool = False) -> list[str]:
    """Add the shipped starter notebooks this member does not already see; returns the titles added."""
    starters = starter_notebooks()
    with db.transaction() as s:
        authorize(s, actor, "notebook.write")
        seen = {
            title.lower()
            for title in s.scalars(
                select(Notebook.title).where(
                    Notebook.workspace_id == actor.workspace_id,
                    Notebook.shared | (Notebook.owner_id == actor.user_id),
                )
            )
        }
        added = []
        for starter in starters:
            if starter.title.lower() in seen:
                continue
            nb = _new_notebook(s, actor, starter.title, shared)
            _insert_cells(s, nb.id, starter.cells)
            audit.record_for(s, actor, "notebook.created", "notebook", nb.id, title=starter.title, starter=True)
            added.append(starter.title)
    return added
