"""Whether a URL a workspace typed may reach this host's own networks (the http node, remote MCP servers).

On a hosted Meterbook (billing on) a workspace must not use a URL of its own to reach the
machine's loopback, private ranges or link-local addresses: the sidecar, the database, a cloud
metadata service at 169.254.169.254 that hands out the instance's credentials. Self-hosted, those
are often the point (an intranet API, a local MCP server). So the operator chooses with
``METERBOOK_PRIVATE_NETWORK``: ``allow`` (the default while billing is off) or ``deny`` (the
default once it is on).

The check resolves the host name and refuses when any address it resolves to is not a public
one; the http node runs it for every request, redirects included. A name that resolves to a
public address at the check and a private one at the connect (DNS rebinding) is not caught: a
proxy that pins resolved addresses would be the next step.
"""

from __future__ import annotations

import ipaddress
import socket

from engine.config import get_settings
from engine.errors import PermissionDenied


def private_allowed() -> bool:
    settings = get_settings()
    if settings.private_network:
        return settings.private_network == "allow"
    return not settings.stripe_secret_key


def check_host(host: str | None, port: int | None = None) -> None:
    """Refuse a host that is, or resolves to, a loopback, private, link-local or reserved address."""
    if private_allowed() or not host:
        return
    for address in _addresses(host, port):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise PermissionDenied(
                f"{host} is an address on this host's own network ({ip}), which workspaces cannot reach on this "
                "Meterbook (METERBOOK_PRIVATE_NETWORK=deny). Use the service's public address.")


def _addresses(host: str, port: int | None) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)})
    except socket.gaierror:
        return []  # it does not resolve: the request itself fails with "cannot reach", nothing is reached
