"""The Notebooks page, driven through AppTest against a real SQLite database and the real SQL sandbox."""

from decimal import Decimal
from functools import partial

import pytest

from engine import db, notebooks, usage
from engine.config import get_settings
from tests import pages_helpers
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/notebooks.py"
open_page = partial(pages_helpers.open_page, PAGE)


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    actor = owner()
    with db.transaction() as s:
        for provider in ("openai", "openai", "anthropic"):
            usage.record(s, workspace_id=actor.workspace_id, provider=provider, model="m", cost=Decimal("0.5"))
    yield actor
    get_settings.cache_clear()


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_create_a_notebook_add_a_sql_cell_run_it_and_see_the_rows(boss):
    at = open_page()
    assert at.title[0].value == "Notebooks"
    assert any("No notebooks yet" in i.value for i in at.info)

    at.text_input(key="new_notebook_title").input("Spend check")
    at.button(key="new_notebook_submit").click().run()
    no_exceptions(at)
    assert at.title[0].value == "Spend check"
    [nb] = notebooks.list_notebooks(boss)
    assert at.query_params["notebook"] == str(nb.id)  # the open notebook is in the URL
    assert any("This notebook is empty" in i.value for i in at.info)

    at.button(key="add_sql").click().run()
    no_exceptions(at)
    [cell] = notebooks.get_notebook(boss, nb.id).cells
    at.text_area(key=f"cell_source_{cell.id}").input(
        "SELECT provider, count(*) AS calls FROM ledger GROUP BY 1 ORDER BY 1")
    at.button(key=f"cell_run_{cell.id}").click().run()
    no_exceptions(at)
    assert not errors(at)
    assert any(c.startswith("2 rows · ") and " ms · ran " in c for c in captions(at))
    assert at.dataframe[0].value.to_dict("list") == {"provider": ["anthropic", "openai"], "calls": [1, 2]}
    stored = notebooks.get_notebook(boss, nb.id).cells[0]
    assert stored.source.startswith("SELECT provider") and stored.row_count == 2

    # A chart of that result, then back to the list.
    at.button(key="add_chart").click().run()
    no_exceptions(at)
    chart = notebooks.get_notebook(boss, nb.id).cells[1]
    assert chart.options == {"type": "bar", "source": cell.id, "x": "provider", "y": "calls"}
    assert len(at.get("plotly_chart")) == 1
    at.button(key="nb_back").click().run()
    assert at.title[0].value == "Notebooks" and "notebook" not in at.query_params
    assert any("Private · by you · 2 cells" in c for c in captions(at))


def test_a_failing_query_shows_its_error_on_the_cell(boss):
    nb = notebooks.create_notebook(boss, "Broken")
    cell = notebooks.add_cell(boss, nb.id, "sql", "SELECT * FROM read_csv('/etc/passwd')")
    at = open_page()
    at.button(key=f"open_{nb.id}").click().run()
    at.button(key=f"cell_run_{cell.id}").click().run()
    no_exceptions(at)
    [message] = errors(at)
    assert "can read only this workspace's tables" in message
    assert not at.dataframe
    assert notebooks.get_notebook(boss, nb.id).cells[0].error == message


def test_deleting_a_notebook_asks_first(boss):
    nb = notebooks.create_notebook(boss, "Doomed")
    notebooks.add_cell(boss, nb.id, "markdown", "# Bye")
    at = open_page()
    at.button(key=f"open_{nb.id}").click().run()
    at.button(key="nb_delete").click().run()
    no_exceptions(at)
    assert "Delete **Doomed** and its 1 cells? This cannot be undone." in [m.value for m in at.markdown]
    at.button(key="nb_delete_cancel").click().run()
    with pytest.raises(KeyError):
        at.get_by_key("nb_delete_confirm")
    assert len(notebooks.list_notebooks(boss)) == 1

    at.button(key="nb_delete").click().run()
    at.button(key="nb_delete_confirm").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Notebook “Doomed” deleted."]
    assert at.title[0].value == "Notebooks"
    assert notebooks.list_notebooks(boss) == []


def test_cells_move_and_delete_with_confirmation(boss):
    nb = notebooks.create_notebook(boss, "Notes")
    first = notebooks.add_cell(boss, nb.id, "markdown", "first note")
    second = notebooks.add_cell(boss, nb.id, "markdown", "second note")
    at = open_page()
    at.button(key=f"open_{nb.id}").click().run()
    assert at.button(key=f"cell_up_{first.id}").disabled and at.button(key=f"cell_down_{second.id}").disabled
    at.button(key=f"cell_up_{second.id}").click().run()
    no_exceptions(at)
    assert [c.source for c in notebooks.get_notebook(boss, nb.id).cells] == ["second note", "first note"]

    at.button(key=f"cell_delete_{first.id}").click().run()
    assert any(m.value.startswith("Delete **cell 2**") for m in at.markdown)
    assert len(notebooks.get_notebook(boss, nb.id).cells) == 2  # nothing before confirming
    at.button(key="cell_delete_confirm").click().run()
    no_exceptions(at)
    assert [c.source for c in notebooks.get_notebook(boss, nb.id).cells] == ["second note"]


def test_a_viewer_reads_a_shared_notebook_without_controls(boss):
    member(boss, "viewer@example.com", "viewer")
    nb = notebooks.create_notebook(boss, "Team view")
    cell = notebooks.add_cell(boss, nb.id, "sql", "SELECT 1 AS one")
    notebooks.create_notebook(boss, "Owner's draft")  # private: the viewer never sees it
    notebooks.set_shared(boss, nb.id, True)
    at = open_page("viewer@example.com")
    assert [m.value for m in at.markdown if m.value.startswith("**")] == ["**Team view**"]
    for key in ("new_notebook_title", "add_starters"):
        with pytest.raises(KeyError):
            at.get_by_key(key)
    at.button(key=f"open_{nb.id}").click().run()
    no_exceptions(at)
    assert any("read only" in c for c in captions(at))
    assert [c.value for c in at.code] == ["SELECT 1 AS one"]
    for key in (f"cell_run_{cell.id}", "nb_run_all", "nb_delete", "add_sql", f"cell_delete_{cell.id}"):
        with pytest.raises(KeyError):
            at.get_by_key(key)


def test_starter_notebooks_are_added_and_run_all_fills_them(boss):
    at = open_page()
    at.button(key="add_starters").click().run()
    no_exceptions(at)
    assert at.success[0].value.startswith("Added ")
    titles = [n.title for n in notebooks.list_notebooks(boss)]
    assert sorted(titles) == ["Cost per project", "Model comparison", "Monthly spend review"]
    review = next(n for n in notebooks.list_notebooks(boss) if n.title == "Monthly spend review")
    at.button(key=f"open_{review.id}").click().run()
    at.button(key="nb_run_all").click().run()
    no_exceptions(at)
    assert [s.value for s in at.success] == ["Ran every cell."]
    view = notebooks.get_notebook(boss, review.id)
    assert all(c.error is None for c in view.cells)
    assert len(at.dataframe) == sum(c.kind == "sql" for c in view.cells)


def test_a_prompt_cell_without_a_model_set_up_says_what_to_do(boss):
    nb = notebooks.create_notebook(boss, "Ask")
    at = open_page()
    at.button(key=f"open_{nb.id}").click().run()
    at.button(key="add_prompt").click().run()
    no_exceptions(at)
    [cell] = notebooks.get_notebook(boss, nb.id).cells
    at.text_area(key=f"cell_source_{cell.id}").input("Say hello")
    at.button(key=f"cell_run_{cell.id}").click().run()
    no_exceptions(at)
    [message] = errors(at)
    assert "No model is set up for text" in message
    stored = notebooks.get_notebook(boss, nb.id).cells[0]
    assert (stored.source, stored.error, stored.answer) == ("Say hello", message, None)
