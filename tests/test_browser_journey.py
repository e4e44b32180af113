"""The main journey in a real headless Chromium, against the app as `python -m engine up` starts it.

Sign in as the demo user, see the demo totals on the Overview, create a project, see it
listed, and stay signed in across a browser refresh.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from engine import db, demo, usage
from engine.config import PROJECT_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("METERBOOK_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
        pytest.skip("Debian's chromium is not installed")
    tmp = tmp_path_factory.mktemp("journey")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "METERBOOK_DATABASE_URL": f"sqlite:///{tmp / 'meterbook.db'}",
        "METERBOOK_DATA_DIR": str(tmp),
        "METERBOOK_PORT": str(port),
        "METERBOOK_BASE_URL": url,
        "METERBOOK_DEMO_ROWS": "4000",
    }
    log = open(tmp / "up.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "up"], cwd=PROJECT_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`engine up` exited early:\n{(tmp / 'up.log').read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the app did not come up:\n{(tmp / 'up.log').read_text()}")
        yield url, env, (tmp / "up.log")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _settle(page) -> None:
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached", timeout=30_000)
    page.wait_for_timeout(300)


def test_demo_user_journey(running_app):
    from playwright.sync_api import expect, sync_playwright

    url, env, log_path = running_app
    log_text = log_path.read_text()
    assert f"Meterbook is running at {url}" in log_text
    assert f"Demo login: {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}" in log_text

    # The figure the Overview must show, computed by the engine from the same database.
    db.use_engine(db.make_engine(env["METERBOOK_DATABASE_URL"]))
    try:
        from engine import accounts
        from engine.permissions import Actor

        user = accounts.authenticate(demo.DEMO_EMAIL, demo.DEMO_PASSWORD)
        [access] = accounts.workspaces_for(user.id)
        expected = usage.overview(Actor(user.id, access.workspace.id)).this_month.spend
    finally:
        db.use_engine(None)
    assert expected > Decimal(0)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        _settle(page)
        expect(page.get_by_role("heading", name="Sign in to Meterbook")).to_be_visible(timeout=30_000)
        page.get_by_role("textbox", name="Email").fill(demo.DEMO_EMAIL)
        page.get_by_role("textbox", name="Password").fill(demo.DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)
        expect(page.get_by_test_id("stMetricValue").first).to_have_text(f"${expected:,.2f}", timeout=30_000)
        page.screenshot(path=str(log_path.parent / "overview.png"), full_page=True)

        # A refresh keeps the session (the cookie holds a server-side session token).
        page.reload()
        _settle(page)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)

        page.get_by_role("link", name="Projects").first.click()
        expect(page.get_by_role("heading", name="Projects")).to_be_visible(timeout=30_000)
        page.get_by_text("New project").first.click()
        page.get_by_role("textbox", name="Name").first.fill("Browser-made project")
        page.get_by_role("button", name="Create project").click()
        expect(page.get_by_text("Browser-made project").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(log_path.parent / "projects.png"), full_page=True)
        browser.close()
    if os.environ.get("METERBOOK_KEEP_SCREENSHOTS"):
        shutil.copy(log_path.parent / "projects.png", os.environ["METERBOOK_KEEP_SCREENSHOTS"])
