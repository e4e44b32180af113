"""Whether URLs a workspace typed may reach this host's own networks (METERBOOK_PRIVATE_NETWORK,
engine/outbound.py): the rule itself, the workflow http node (redirects included) and remote MCP
servers. Only 127.0.0.1 is ever connected to; public addresses are checked as literals."""

from __future__ import annotations

import itertools

import pytest

from engine import outbound
from engine.connectors import connections
from engine.errors import PermissionDenied
from engine.workflows import runs, store, worker
from tests.factories import owner
from tests.fakes.http_target import HttpTarget
from tests.fakes.mcp_servers import http_server


@pytest.fixture
def network(settings_env):
    def set_mode(value: str | None, *, billing: bool = False):
        settings_env(PRIVATE_NETWORK=value, STRIPE_SECRET_KEY="sk_test_x" if billing else None)

    return set_mode


@pytest.fixture
def targets():
    first, second = HttpTarget().start(), HttpTarget().start()
    yield first, second
    first.stop()
    second.stop()


def test_the_rule(network):
    network(None)
    assert outbound.private_allowed()  # self-hosted: an intranet API or a local server is the point
    network(None, billing=True)
    assert not outbound.private_allowed()
    for host in ("127.0.0.1", "localhost", "10.1.2.3", "192.168.0.9", "169.254.169.254", "::1", "[fd00::1]", "0.0.0.0"):
        with pytest.raises(PermissionDenied, match="this host's own network"):
            outbound.check_host(host)
    for host in ("8.8.8.8", "2606:4700:4700::1111"):
        outbound.check_host(host)  # public literals pass without any lookup
    network("allow", billing=True)
    outbound.check_host("127.0.0.1")


_names = itertools.count()


def _run(actor, url: str):
    wf = store.create(actor, f"name: h{next(_names)}\nnodes:\n  - {{id: a, type: http, retry: {{max_attempts: 3, backoff_s: 0}}, params: {{url: '{url}'}}}}\n")
    view = runs.trigger(actor, wf.id, None)
    worker.work_once("outbound")
    return runs.get_run(actor, view.id), runs.steps(actor, view.id)[0]


def test_the_http_node_is_refused_a_private_address_and_a_redirect_to_one(sqlite_database, data_dir, network, targets,
                                                                          monkeypatch):
    first, second = targets
    actor = owner()
    network("deny")
    done, step = _run(actor, f"{first.url}/hello")
    assert done.status == "failed" and step.attempt == 1 and "this host's own network (127.0.0.1)" in step.error
    assert first.seen == []  # refused before anything was sent

    # The first host passes as public (as a real name would); its redirect to localhost does not.
    real = outbound._addresses
    monkeypatch.setattr(outbound, "_addresses", lambda host, port: ["93.184.216.34"] if host == "127.0.0.1" else real(host, port))
    first.answers["/go"] = [(302, "", "text/plain", 0, {"Location": f"http://localhost:{second.server.server_address[1]}/secret"})]
    done, step = _run(actor, f"{first.url}/go")
    assert done.status == "failed" and "localhost is an address on this host's own network" in step.error
    assert [s.path for s in first.seen] == ["/go"] and second.seen == []

    network("allow")
    done, _ = _run(actor, f"{first.url}/go")
    assert done.status == "succeeded" and [s.path for s in second.seen] == ["/secret"]


def test_a_remote_mcp_server_on_a_private_address_is_refused(sqlite_database, network):
    actor = owner()
    with http_server(token=None) as server:
        conn = connections.create_custom(actor, name="Local", url=server.url)
        assert connections.test(actor, conn.id).ok
        network("deny")
        result = connections.test(actor, conn.id)
    assert not result.ok and "this host's own network (127.0.0.1)" in result.message
