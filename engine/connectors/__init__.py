"""Connectors: MCP servers a workspace connects to, and the tools they offer.

- ``catalog``      data/connectors.yaml: well-known services (MCP servers or http-node presets)
- ``models``       the ``mcp_connections`` table (migration 0012)
- ``connections``  connect / update / enable / delete / test, credentials in the vault
- ``client``       the MCP client over stdio (a child process) or streamable HTTP, from sync code
- ``toolbox``      ``tools_for`` / ``call_tool``: what chat and the workflow ``mcp`` node use
"""
