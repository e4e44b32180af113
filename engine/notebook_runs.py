"""Running notebook cells: a SQL cell in the SQL sandbox, a Prompt cell through the generation path
(charged like any call), one cell or all of them from the top.

A query's or a prompt's error is stored on its cell, not raised; a cell edited while it ran
keeps its new source and loses the stale result. ``engine.notebooks`` owns the cells and
who may see them; this module only fills their results in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from analytics import sandbox
from engine import db, generation
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, MeterbookError, PermissionDenied
from engine.notebook_render import encode_result
from engine.notebooks import PROMPT_ROWS, ROW_CAP, CellView, NotebookView, _cell, _view, get_notebook
from engine.permissions import Actor, authorize

@dataclass(frozen=True)
class _Outcome:
    result: bytes | None
    rows: int | None
    truncated: bool
    ms: int | None
    error: str | None


def _execute(workspace_id: int, sql: str) -> _Outcome:
    try:
        answer = sandbox.run_user_sql(workspace_id, sql, row_cap=ROW_CAP)
    except sandbox.SqlError as exc:
        return _Outcome(None, None, False, None, str(exc))
    data, kept = encode_result(answer.rows)
    return _Outcome(data, kept, answer.truncated or kept < answer.rows.height, int(answer.elapsed_ms), None)


def prompt_variables(view: NotebookView, cell: CellView) -> dict[str, str]:
    """What a prompt template can use: each earlier cell with a result, as text, named ``cell_<number>``."""
    variables = {}
    for earlier in view.cells[: cell.number - 1]:
        if earlier.frame is None:
            continue
        if earlier.kind == "sql":
            variables[f"cell_{earlier.number}"] = earlier.frame.head(PROMPT_ROWS).write_csv()
        elif earlier.kind == "prompt":
            variables[f"cell_{earlier.number}"] = earlier.answer
    return variables


# Sandboxed: a template is user input and must not reach Python objects through attributes.
_PROMPTS = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def render_prompt(view: NotebookView, cell: CellView) -> str:
    """The prompt a Prompt cell would send now; ``InvalidInput`` says what in the template is wrong."""
    variables = prompt_variables(view, cell)
    try:
        text = _PROMPTS.from_string(cell.source).render(variables)
    except TemplateError as exc:
        usable = ", ".join(f"{{{{ {name} }}}}" for name in variables) or "none yet (run the cells above first)"
        raise InvalidInput(f"The prompt cannot be filled in: {exc.message or exc}. Earlier results: {usable}.") from None
    if not text.strip():
        raise InvalidInput("The prompt is empty once filled in. Write what you want to ask.")
    return text


def _ask(actor: Actor, view: NotebookView, cell: CellView) -> _Outcome:
    try:
        prompt = render_prompt(view, cell)
        answer = generation.generate(
            generation.GenerationRequest(prompt=prompt, target=cell.options.get("target"),
                                         max_tokens=cell.options.get("max_tokens"), notebook_id=view.id),
            actor,
        )
    except PermissionDenied:
        raise
    except MeterbookError as exc:  # no route, a budget's hard limit, a provider that failed: the cell says so
        return _Outcome(None, None, False, None, str(exc))
    frame = pl.DataFrame(
        {"answer": [answer.text], "model": [answer.target], "cost_usd": [answer.cost],
         "input_tokens": [answer.usage.input_tokens], "output_tokens": [answer.usage.output_tokens]},
        schema={"answer": pl.String, "model": pl.String, "cost_usd": pl.Decimal(20, 10),
                "input_tokens": pl.Int64, "output_tokens": pl.Int64},
    )
    return _Outcome(encode_result(frame)[0], 1, False, answer.latency_ms, None)


def run_cell(actor: Actor, cell_id: int) -> CellView:
    """Run one cell and store what it produced. A query's or prompt's error is stored on the cell, not raised."""
    with db.read_session() as s:
        cell, nb, _ = _cell(s, actor, cell_id, "notebook.write")
        kind, source, notebook_id = cell.kind, cell.source, nb.id
    if kind in ("markdown", "chart"):  # nothing to run; a chart is drawn from what is stored
        return get_notebook(actor, notebook_id).cell(cell_id)
    if not source.strip():
        raise InvalidInput(f"This cell has no {'query' if kind == 'sql' else 'prompt'} yet. Write one, then run it.")
    if kind == "sql":
        outcome = _execute(actor.workspace_id, source)
    else:
        view = get_notebook(actor, notebook_id)
        outcome = _ask(actor, view, view.cell(cell_id))
    with db.transaction() as s:
        cell, nb, role = _cell(s, actor, cell_id, "notebook.write", lock=True)
        if cell.source != source:
            raise Conflict("The cell changed while it ran, so its result was not kept. Run it again.")
        cell.result, cell.result_rows, cell.result_truncated = outcome.result, outcome.rows, outcome.truncated
        cell.result_ms, cell.error, cell.ran_at = outcome.ms, outcome.error, utcnow()
        nb.updated_at = cell.ran_at
        s.flush()
        return _view(s, nb, actor, role).cell(cell_id)


def run_all(
    actor: Actor, notebook_id: int, progress: Callable[[int, int, CellView], None] | None = None
) -> NotebookView:
    """Run every SQL, Chart and Prompt cell from the top (prompts are charged). A failure does not stop the rest.

    ``progress(done, total, cell)`` is called after each cell with its fresh result.
    """
    with db.read_session() as s:
        authorize(s, actor, "notebook.write")
    runnable = [c for c in get_notebook(actor, notebook_id).cells if c.kind != "markdown"]
    for done, cell in enumerate(runnable, start=1):
        if cell.kind in ("sql", "prompt") and not cell.source.strip():
            outcome = replace(cell, error="This cell is empty.")
        else:
            outcome = run_cell(actor, cell.id)
        if progress:
            progress(done, len(runnable), outcome)
    return get_notebook(actor, notebook_id)
