"""What this Meterbook lets workspace admins start on its host as MCP stdio servers.

A stdio server is a process on this machine with Meterbook's own rights. On a self-hosted instance
the workspace admins are the operator's own team; on a hosted one (billing on) they are customers,
and a free command line would hand each of them the host — the master key, every other
workspace's data. So the operator chooses, with ``METERBOOK_MCP_STDIO``:

- ``any``: catalog entries and custom commands (the default when billing is off);
- ``catalog``: only the catalog's own commands, and not the few whose purpose is to reach the host's
  files, containers or browser (``host_access: true`` in data/connectors.yaml) (the default when
  billing is on);
- ``off``: no stdio servers at all; remote (HTTP) servers only.

Checked when a connection is made and again before every session, so tightening the setting stops
existing connections too.
"""

from __future__ import annotations

from engine.config import get_settings
from engine.errors import PermissionDenied

MODES = ("off", "catalog", "any")


def mode() -> str:
    settings = get_settings()
    if settings.mcp_stdio:
        return settings.mcp_stdio
    return "catalog" if settings.stripe_secret_key else "any"


def allows_custom() -> bool:
    return mode() == "any"


def check_stdio(name: str, *, custom: bool, host_access: bool) -> None:
    """Refuse, in words an admin can act on, a stdio server this instance does not run."""
    words = refusal(name, custom=custom, host_access=host_access)
    if words:
        raise PermissionDenied(words)


def refusal(name: str, *, custom: bool, host_access: bool) -> str | None:
    """Why this instance would not run the stdio server ``name``, or None when it would."""
    current = mode()
    if current == "any":
        return None
    if current == "off":
        return (f"{name} runs as a process on this host, and this Meterbook runs no such servers "
                "(METERBOOK_MCP_STDIO=off). Use a remote (HTTP) server instead.")
    if custom:
        return ("This Meterbook runs only the catalog's stdio servers, not custom commands "
                "(METERBOOK_MCP_STDIO=catalog). Add a remote (HTTP) server instead, or ask the "
                "operator to allow custom commands.")
    if host_access:
        return (f"{name} reaches this host's files, containers or browser, which this Meterbook "
                "does not allow for workspaces (METERBOOK_MCP_STDIO=catalog).")
    return None
