import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine import migrate
from engine.config import PROJECT_ROOT
from engine.models import Base


def test_migrations_describe_the_models(database):
    with database.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []
    assert migrate.current(database) == migrate.head()


def test_init_is_safe_to_run_twice(tmp_path):
    env = {"METERBOOK_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "engine", "init"], cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"revision {migrate.head()}" in out.stdout


def test_demo_data_twice_says_so_without_a_traceback(tmp_path):
    env = {"METERBOOK_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}", "PATH": "/usr/bin:/bin",
           "METERBOOK_ARGON2_PROFILE": "test"}
    first = subprocess.run([sys.executable, "-m", "engine", "demo-data", "--rows", "500"], cwd=PROJECT_ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-m", "engine", "demo-data", "--rows", "500"], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert second.stderr.startswith("error: ") and "Traceback" not in second.stderr
