"""The rooms keep their directions of dependency (docs/architecture.md): an AST walk over imports."""

import ast
from pathlib import Path

from engine.config import PROJECT_ROOT

LAYER_FORBIDS = {
    "providers": {"engine", "analytics", "pages", "streamlit", "sqlalchemy"},
    "analytics": {"pages", "streamlit", "providers"},
    "engine": {"pages", "streamlit", "streamlit_app"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_do_not_import_upwards():
    offences = []
    for room, forbidden in LAYER_FORBIDS.items():
        for path in (PROJECT_ROOT / room).rglob("*.py"):
            for module in imported_modules(path):
                if module.split(".")[0] in forbidden:
                    offences.append(f"{path.relative_to(PROJECT_ROOT)} imports {module}")
    assert not offences, offences


def test_pages_reach_the_database_only_through_engine_services():
    offences = []
    for path in [*(PROJECT_ROOT / "pages").glob("*.py"), PROJECT_ROOT / "streamlit_app.py"]:
        for module in imported_modules(path):
            if module.split(".")[0] == "sqlalchemy" or module in {"engine.db", "engine.models"}:
                offences.append(f"{path.name} imports {module}")
    # engine.models is allowed only for type names in the shared UI helpers.
    assert offences in ([], ["_common.py imports engine.models"]), offences
