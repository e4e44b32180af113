"""The harness the real-browser journeys share: the app as ``python -m engine up`` starts it (UI and sidecar), and Chromium.

- ``serve_app(tmp)`` starts the app on a fresh SQLite database in ``tmp`` and a free port on
  127.0.0.1, waits until Streamlit answers its health check, and stops the whole process
  group afterwards. Every app runs with the fixed ``MASTER_KEY``, and with Ollama looked for
  where nothing listens.
- ``app_database(tmp)`` points this process at that database with the same master key, so a
  journey can write its workspace before the app starts (``routed_owner``) and read the
  ledger while it runs.
- ``app_with_openai`` is both for the common case: one owner, gpt-4o-mini routed to the fake
  OpenAI server in this process.
- ``demo_app`` is the app with its demo workspace, one per test module that imports it.
- ``launch(pw)`` starts Debian's Chromium through Playwright; ``sign_in`` and ``open_page``
  are the first steps of most journeys; ``settle`` waits for Streamlit to finish a run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine import accounts, connections, db, generation, migrate, routes, vault
from engine.config import PROJECT_ROOT, get_settings
from engine.permissions import Actor
from tests.fakes.openai_server import API_KEY, FakeOpenAI

CHROMIUM = os.environ.get("METERBOOK_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]
MASTER_KEY = vault.format_master_key(bytes(range(32)))
TIMEOUT = 30_000  # ms Playwright waits for what a journey expects to see


@dataclass(frozen=True)
class App:
    """A running app: where it answers, the environment it was started with, and its log."""

    url: str
    env: dict[str, str]
    log: Path

    @property
    def database_url(self) -> str:
        return self.env["METERBOOK_DATABASE_URL"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
        pytest.skip("Debian's chromium is not installed")


def database_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'meterbook.db'}"


@contextmanager
def serve_app(tmp: Path, *, demo: bool, port: int | None = None, env: dict[str, str] | None = None) -> Iterator[App]:
    """``python -m engine up`` (with ``--no-demo`` unless ``demo``) on ``tmp``'s database, until the block ends."""
    require_chromium()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "METERBOOK_DATABASE_URL": database_url(tmp),
        "METERBOOK_DATA_DIR": str(tmp),
        "METERBOOK_SECRET_KEY": MASTER_KEY,
        "METERBOOK_PORT": str(port),
        "METERBOOK_BASE_URL": url,
        "METERBOOK_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",  # nothing there
        "METERBOOK_SIDECAR_PORT": str(free_port()),  # journeys run side by side, each with its sidecar
        **(env or {}),
    }
    log_path = tmp / "up.log"
    command = [sys.executable, "-m", "engine", "up", *([] if demo else ["--no-demo"])]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            _wait_until_healthy(proc, url, log_path)
            yield App(url, full_env, log_path)
        finally:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:  # it exited early; _wait_until_healthy has said so
                pass
            proc.wait(timeout=30)


def _wait_until_healthy(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`engine up` exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the app did not come up:\n{log_path.read_text()}")


@contextmanager
def app_database(tmp: Path) -> Iterator[None]:
    """This process on the database ``serve_app(tmp)`` uses, migrated, with the app's master key."""
    with pytest.MonkeyPatch.context() as mp:
        # What this process writes (provider keys under envelope encryption) the app must be able to read.
        mp.setenv("METERBOOK_SECRET_KEY", MASTER_KEY)
        get_settings.cache_clear()
        engine = db.make_engine(database_url(tmp))
        db.use_engine(engine)
        try:
            migrate.upgrade(engine)
            yield
        finally:
            db.use_engine(None)
            engine.dispose()
            get_settings.cache_clear()
            generation._cached_provider.cache_clear()


def routed_owner(email: str, name: str, password: str, workspace: str,
                 *vendors: tuple[str, str, str, str]) -> Actor:
    """The first owner, with a connection per (provider type, API key, base URL, model), routed for text in order.

    Each connection is named for its provider type.
    """
    user, ws = accounts.create_first_owner(email, name, password, workspace)
    actor = Actor(user.id, ws.id)
    for provider_type, api_key, base_url, model in vendors:
        c = connections.create_connection(actor, name=provider_type, provider_type=provider_type, api_key=api_key,
                                          base_url=base_url)
        routes.add_target(actor, "text", connection_id=c.id, model=model)
    return actor


@contextmanager
def app_with_openai(tmp: Path, email: str, name: str, password: str, workspace: str
                    ) -> Iterator[tuple[str, Actor, FakeOpenAI]]:
    """The app's URL, its first owner, and the fake OpenAI server that owner's text route (gpt-4o-mini) calls."""
    with FakeOpenAI() as fake, app_database(tmp):
        actor = routed_owner(email, name, password, workspace, ("openai", API_KEY, fake.base_url, "gpt-4o-mini"))
        with serve_app(tmp, demo=False) as app:
            yield app.url, actor, fake


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory) -> Iterator[App]:
    """The app with its demo workspace (4,000 ledger rows), shared by the tests of the module that imports it."""
    with serve_app(tmp_path_factory.mktemp("journey"), demo=True, env={"METERBOOK_DEMO_ROWS": "4000"}) as app:
        yield app


def launch(pw):
    """Debian's Chromium, headless, with nothing of its own reaching the network."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def settle(page) -> None:
    """Waits until Streamlit has finished running the script, and a moment for the page to draw what it sent."""
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached", timeout=TIMEOUT)
    page.wait_for_timeout(300)


def sign_in(page, url: str, email: str, password: str) -> None:
    """Opens the app on its sign-in page and signs in with the form, landing on the Overview."""
    from playwright.sync_api import expect

    page.goto(url)
    settle(page)
    expect(page.get_by_role("heading", name="Sign in to Meterbook")).to_be_visible(timeout=TIMEOUT)
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=TIMEOUT)
    # The session cookie is written by a script a moment later; a journey that opens a URL
    # straight away (page.goto, reload) would otherwise land on the sign-in page.
    page.wait_for_function("document.cookie.includes('meterbook_session=')", timeout=TIMEOUT)


def open_page(page, name: str) -> None:
    """Follows the navigation link ``name`` and waits for that page to be drawn."""
    from playwright.sync_api import expect

    page.get_by_role("link", name=name, exact=True).first.click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible(timeout=TIMEOUT)
    settle(page)
