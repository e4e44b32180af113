from decimal import Decimal

import pytest

from engine import clients, db, projects, usage
from engine.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from engine.permissions import Actor
from tests.factories import member, owner


def test_project_lifecycle_with_client_and_budget(database):
    boss = owner()
    acme = clients.create_client(boss, "Acme Corp", "ops@acme.example")
    p = projects.create_project(boss, "Support bot", client_id=acme.id, budget_usd="$2,500")
    assert (p.client_name, p.budget_usd, p.spent_usd) == ("Acme Corp", Decimal("2500.00"), Decimal(0))
    page, total = projects.list_projects(boss, search="supp")
    assert total == 1 and page[0].name == "Support bot"
    projects.set_archived(boss, p.id, True)
    assert projects.list_projects(boss)[1] == 0
    assert projects.list_projects(boss, include_archived=True)[1] == 1


def test_duplicate_project_name_is_refused_case_insensitively(database):
    boss = owner()
    projects.create_project(boss, "Research")
    with pytest.raises(Conflict, match="already exists"):
        projects.create_project(boss, "research ")
    assert projects.list_projects(boss)[1] == 1


@pytest.mark.parametrize("budget", ["abc", "-5", "0", "NaN", "1e12", "999999999"])
def test_bad_budgets_are_refused(database, budget):
    boss = owner()
    with pytest.raises(InvalidInput):
        projects.create_project(boss, "P", budget_usd=budget)
    assert projects.list_projects(boss)[1] == 0


def test_viewer_cannot_edit_projects_even_without_the_ui(database):
    boss = owner()
    viewer = member(boss, "viewer@example.com", "viewer")
    with pytest.raises(PermissionDenied, match="viewer"):
        projects.create_project(viewer, "Sneaky")
    p = projects.create_project(boss, "Real")
    with pytest.raises(PermissionDenied):
        projects.update_project(viewer, p.id, name="Renamed", client_id=None, description=None, budget_usd=None)
    assert projects.get_project(boss, p.id).name == "Real"


def test_projects_are_isolated_between_workspaces(database):
    boss = owner()
    from engine import accounts

    other_ws = accounts.create_workspace(boss.user_id, "Other")
    other = Actor(boss.user_id, other_ws.id)
    p = projects.create_project(boss, "Mine")
    with pytest.raises(NotFound):
        projects.get_project(other, p.id)
    foreign_client = clients.create_client(other, "Elsewhere")
    with pytest.raises(InvalidInput, match="client from this workspace"):
        projects.create_project(boss, "Cross", client_id=foreign_client.id)


def test_client_with_projects_cannot_be_deleted(database):
    boss = owner()
    acme = clients.create_client(boss, "Acme")
    projects.create_project(boss, "A", client_id=acme.id)
    with pytest.raises(Conflict, match="still has 1 project"):
        clients.delete_client(boss, acme.id)
    assert clients.list_clients(boss)[1] == 1
    empty = clients.create_client(boss, "Empty")
    clients.delete_client(boss, empty.id)
    assert [c.name for c in clients.list_clients(boss)[0]] == ["Acme"]


def test_project_with_usage_cannot_be_deleted_and_spend_is_exact(database):
    boss = owner()
    p = projects.create_project(boss, "Charged", budget_usd="10")
    costs = [Decimal("0.0000001234"), Decimal("1.1"), Decimal("2.2000000001")]
    with db.transaction() as s:
        for cost in costs:
            usage.record(s, workspace_id=boss.workspace_id, project_id=p.id, provider="openai", model="gpt-4o",
                         input_tokens=10, output_tokens=5, cost=cost)
    assert projects.get_project(boss, p.id).spent_usd == sum(costs)
    with pytest.raises(Conflict, match="Archive the project"):
        projects.delete_project(boss, p.id)


def test_pagination(database):
    boss = owner()
    for i in range(30):
        projects.create_project(boss, f"Project {i:02d}")
    first, total = projects.list_projects(boss, page=1, page_size=25)
    second, _ = projects.list_projects(boss, page=2, page_size=25)
    assert total == 30 and len(first) == 25 and len(second) == 5
    assert {p.name for p in first}.isdisjoint({p.name for p in second})
