"""The Webhooks section of the workflow editor through AppTest: create (URL, secret and curl shown once),
the list with the token masked, disable, rotate and delete with confirmation, and what a viewer sees."""

from __future__ import annotations

import pytest

from engine.config import get_settings
from engine.workflows import hooks, store
from tests.factories import member, owner
from tests.pages_helpers import no_exceptions, open_page

PAGE = "pages/workflows.py"
SPEC = """\
name: Greeter
inputs:
  who: {type: string, default: world}
nodes:
  - {id: hello, type: transform, params: {value: "Hello {{ inputs.who }}"}}
"""


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("METERBOOK_SIDECAR_URL", "https://hooks.example.com")
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def codes(at) -> list[str]:
    return [c.value for c in at.code]


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_create_shows_the_url_secret_and_curl_once_then_only_the_masked_url(boss):
    wf = store.create(boss, SPEC)
    at = open_page(PAGE, query={"workflow": str(wf.id)})
    at.checkbox(key="wf_hook_signed").check()
    at.button(key="wf_hook_create").click().run()
    no_exceptions(at)
    [hook] = hooks.list_hooks(boss, wf.id)
    assert hook.require_signature
    shown = codes(at)
    [url] = [c for c in shown if c.startswith("https://hooks.example.com/hooks/")]
    token = url.rsplit("/", 1)[1]
    assert url == f"https://hooks.example.com/hooks/{wf.id}/{token}" and token.endswith(hook.token_hint)
    [secret] = [c for c in shown if c.startswith("mbs_")]
    [curl] = [c for c in shown if "curl -sS -X POST" in c]
    assert secret in curl and url in curl and "X-Meterbook-Signature: sha256=$SIG" in curl and '"who":"world"' in curl
    at.button(key="wf_hook_issued_done").click().run()
    no_exceptions(at)
    assert not any(token in c or secret in c for c in codes(at)) and token not in markdown(at)
    assert f"https://hooks.example.com/hooks/{wf.id}/…{hook.token_hint}" in markdown(at)


def test_disable_rotate_and_delete_with_confirmation(boss):
    wf = store.create(boss, SPEC)
    view, old_token, _ = hooks.create_hook(boss, wf.id)
    at = open_page(PAGE, query={"workflow": str(wf.id)})
    at.toggle(key=f"wf_hook_enabled_{view.id}").set_value(False).run()
    no_exceptions(at)
    assert not hooks.list_hooks(boss, wf.id)[0].enabled
    at.button(key=f"wf_hook_rotate_{view.id}").click().run()
    assert hooks.list_hooks(boss, wf.id)[0].token_hint == view.token_hint  # nothing before the confirmation
    at.button(key="wf_hook_rotate_confirm").click().run()
    no_exceptions(at)
    rotated = hooks.list_hooks(boss, wf.id)[0]
    assert rotated.rotated_at is not None
    [url] = [c for c in codes(at) if c.startswith("https://")]
    assert old_token not in url and url.endswith(rotated.token_hint)
    assert any("old URL no longer works" in w.value for w in at.warning)
    at.button(key=f"wf_hook_delete_{view.id}").click().run()
    at.button(key="wf_hook_delete_cancel").click().run()
    assert len(hooks.list_hooks(boss, wf.id)) == 1
    at.button(key=f"wf_hook_delete_{view.id}").click().run()
    at.button(key="wf_hook_delete_confirm").click().run()
    no_exceptions(at)
    assert hooks.list_hooks(boss, wf.id) == []
    assert any("deleted" in s.value for s in at.success)


def test_a_viewer_sees_the_hooks_but_cannot_change_them(boss):
    wf = store.create(boss, SPEC)
    view, _, _ = hooks.create_hook(boss, wf.id)
    member(boss, "vera@example.com", "viewer")
    at = open_page(PAGE, "vera@example.com", query={"workflow": str(wf.id)})
    assert f"/hooks/{wf.id}/…{view.token_hint}" in markdown(at)
    assert not [b for b in at.button if b.key in ("wf_hook_create", f"wf_hook_rotate_{view.id}",
                                                  f"wf_hook_delete_{view.id}")]
    assert at.toggle(key=f"wf_hook_enabled_{view.id}").disabled
