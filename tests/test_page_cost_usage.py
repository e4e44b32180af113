"""The Cost & Usage page, driven through AppTest over the demo workspace on SQLite.

Figures on the page are checked against the engine's own answer for the same view. Writing
the view into the URL is the browser's job (widgets bound to query parameters), so reading a
shared link is tested here and the full round trip in tests/test_browser_cost_usage.py.
"""

from __future__ import annotations

from datetime import date
from functools import partial

import pytest

from engine import dashboards, demo
from engine.config import get_settings
from engine.dashboards import View
from engine.permissions import Actor
from pages._common import usd
from tests.factories import member, owner
from tests.pages_helpers import errors, no_exceptions, open_page, signed_in

PAGE = "pages/cost_usage.py"
# A shared link's query parameters go in with query=: they are there before the page's widgets exist.
open_as_demo = partial(open_page, PAGE, demo.DEMO_EMAIL, password=demo.DEMO_PASSWORD)
DRILL = "cost_usage_drill"


@pytest.fixture
def demo_ws(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    summary = demo.seed(seed=11, days=30, rows=1500)
    yield summary
    get_settings.cache_clear()


def expected(summary: demo.DemoSummary, view: View) -> dashboards.Comparison:
    actor = Actor(summary.user_ids[0], summary.workspace_id)
    with dashboards.open_dashboard(actor) as board:
        return board.summary(board.filters(view)).totals


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_renders_the_demo_figures_with_charts(demo_ws):
    at = open_as_demo(title="Cost & Usage")
    totals = expected(demo_ws, View("7d"))
    assert totals.current.calls > 0
    shown = metrics(at)
    assert shown["Spend"] == usd(totals.current.spend)
    assert shown["Calls"] == f"{totals.current.calls:,}"
    assert shown["Error rate"] == f"{totals.current.error_rate:.2%}"
    spend = next(m for m in at.metric if m.label == "Spend")
    change = (totals.current.spend - totals.previous.spend) / totals.previous.spend * 100
    assert spend.delta == f"{change:+.1f}%"
    assert len(at.get("plotly_chart")) >= 6  # over time, comparison, four top lists (one may be empty), savings
    assert any("Select any bar" in c.value for c in at.caption)
    assert at.download_button(key="cost_usage_download").proto.label == f"Download {totals.current.calls:,} rows as CSV"


def test_filters_and_the_period_change_the_figures(demo_ws):
    at = signed_in(demo.DEMO_EMAIL, demo.DEMO_PASSWORD, PAGE)
    support = demo_ws.project_ids[0]
    at.selectbox(key="project").set_value(support).run()
    no_exceptions(at)
    one_project = expected(demo_ws, View("7d", project_id=support)).current
    everything = expected(demo_ws, View("7d")).current
    assert one_project.spend < everything.spend
    assert metrics(at)["Spend"] == usd(one_project.spend)

    at.selectbox(key="period").set_value("30d").run()
    at.selectbox(key="provider").set_value("openai").run()
    no_exceptions(at)
    narrowed = expected(demo_ws, View("30d", project_id=support, provider="openai")).current
    assert metrics(at)["Calls"] == f"{narrowed.calls:,}"

    at.button_group(key="by").set_value("model").run()
    no_exceptions(at)
    assert [s.value for s in at.subheader][:2] == ["Spend over time, by model", "Models compared"]


def test_a_shared_link_restores_the_view(demo_ws):
    at = open_as_demo(query={"period": "Last 30 days", "project": "Support Assistant", "provider": "openai", "by": "Model"})
    assert not at.warning
    assert at.selectbox(key="period").value == "30d"
    assert at.selectbox(key="project").value == demo_ws.project_ids[0]
    assert at.selectbox(key="provider").value == "openai"
    view = View("30d", project_id=demo_ws.project_ids[0], provider="openai")
    assert metrics(at)["Spend"] == usd(expected(demo_ws, view).current.spend)
    assert at.subheader[0].value == "Spend over time, by model"


def test_a_custom_period_from_a_link(demo_ws):
    at = open_as_demo(query={"period": "Custom dates", "from": "2020-01-01", "to": "2020-01-31"})
    assert at.date_input(key="from").value == date(2020, 1, 1)
    assert metrics(at)["Calls"] == "0"
    assert any("No calls in this period" in i.value for i in at.info)


def test_bad_values_in_a_link_are_ignored_with_a_warning(demo_ws):
    at = open_as_demo(query={"period": "Fortnight", "project": "Nope", "user": "Nobody", "status": "ok"})
    [warning] = at.warning
    assert "period “Fortnight”" in warning.value and "project “Nope”" in warning.value and "user “Nobody”" in warning.value
    assert "status" not in warning.value  # "ok" is a real status
    assert at.selectbox(key="period").value == "7d" and at.selectbox(key="project").value is None
    assert at.selectbox(key="status").value == "ok"
    assert metrics(at)["Calls"] == f"{expected(demo_ws, View('7d', status='ok')).current.calls:,}"
    # The warning is about the link as it was opened, not about every later rerun.
    at.selectbox(key="provider").set_value("openai").run()
    no_exceptions(at)
    assert not at.warning

    garbled = open_as_demo(query={"period": "Custom dates", "from": "last tuesday"})
    assert "from “last tuesday”" in garbled.warning[0].value


def test_a_custom_period_ending_before_it_starts_is_explained(demo_ws):
    at = signed_in(demo.DEMO_EMAIL, demo.DEMO_PASSWORD, PAGE)
    at.selectbox(key="period").set_value("custom").run()
    at.date_input(key="from").set_value(date(2026, 3, 10)).run()
    at.date_input(key="to").set_value(date(2026, 3, 1)).run()
    no_exceptions(at)
    assert errors(at) == ["The first day of the period must not be after its last day."]
    assert not at.metric


def test_drilling_into_a_bar_lists_its_rows_page_by_page(demo_ws):
    at = signed_in(demo.DEMO_EMAIL, demo.DEMO_PASSWORD, PAGE)
    support = demo_ws.project_ids[0]
    # What selecting the Support Assistant bar leaves behind (Streamlit's selection event, by hand).
    at.session_state[DRILL] = {"chart": "cost_usage_chart_top_project",
                               "point": {"customdata": [f'{{"project": {support}}}']},
                               "view": (View("7d"), "provider")}
    at.run()
    no_exceptions(at)
    total = expected(demo_ws, View("7d", project_id=support)).current.calls
    assert total > 50
    assert any(m.value == "Rows behind **Support Assistant**" for m in at.markdown)
    assert any(c.value.startswith(f"Showing rows 1–50 of {total:,}") for c in at.caption)
    table = at.dataframe[0].value
    assert len(table) == 50 and set(table["project"]) == {"Support Assistant"}

    at.pagination(key="cost_usage_rows_page").set_value(2).run()
    no_exceptions(at)
    assert any(c.value.startswith(f"Showing rows 51–{min(100, total)} of {total:,}") for c in at.caption)
    second = at.dataframe[0].value
    assert len(second) == min(50, total - 50) and not set(second["id"]) & set(table["id"])

    at.button(key="cost_usage_clear_drill").click().run()
    assert any("Select any bar" in c.value for c in at.caption)
    assert not at.dataframe


def test_a_drill_from_an_earlier_view_is_dropped(demo_ws):
    at = signed_in(demo.DEMO_EMAIL, demo.DEMO_PASSWORD, PAGE)
    at.session_state[DRILL] = {"chart": "cost_usage_chart_top_project", "view": (View("30d"), "provider"),
                               "point": {"customdata": [f'{{"project": {demo_ws.project_ids[0]}}}']}}
    at.run()
    no_exceptions(at)
    assert DRILL not in at.session_state and not at.dataframe


def test_a_viewer_can_read_it(demo_ws):
    owner_actor = Actor(demo_ws.user_ids[0], demo_ws.workspace_id)
    member(owner_actor, "reader@example.com", "viewer")
    at = open_page(PAGE, "reader@example.com")
    assert metrics(at)["Spend"] == usd(expected(demo_ws, View("7d")).current.spend)


def test_an_empty_workspace_says_what_will_appear(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    owner()
    at = open_page(PAGE)
    assert any("No AI usage recorded yet" in i.value for i in at.info)
    assert not at.metric and not at.get("plotly_chart")
    get_settings.cache_clear()
